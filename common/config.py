"""The one config tree every stage reads: dataclasses loaded from YAML, with `--set` overrides.

    cfg = load_config("configs/base.yaml", overrides=["train.max_steps=100"])

* A YAML file may start with `inherit: other.yaml` (a path relative to it, or a list of paths); its
  keys are merged over the inherited ones, section by section.
* `--set section.key=value` overrides are parsed as YAML scalars/lists (`train.lr=3e-4`,
  `corpus.workers=4`, `checkpoint.root=s3://bucket/run1`).
* Unknown keys and values of the wrong type raise `ConfigError` naming the key and the file (or the
  `--set` flag) it came from, with the accepted keys listed.
* `save_resolved(cfg, path)` writes the fully resolved tree next to each stage's output.

The schema itself (`Config` and its sections) lives in `common/schema.py`.
"""
from __future__ import annotations

import argparse
import re
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from common.errors import ConfigError  # noqa: F401 - re-exported: callers catch common.config.ConfigError
from common.io import write_bytes_atomic


# ----------------------------------------------------------------------------------------------------
# YAML loading with provenance


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (pass an existing YAML file, e.g. configs/demo.yaml)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: dict, over: Mapping, origin: dict, src: str, prefix: str = "") -> None:
    """Deep-merge `over` into `base` in place, recording the source of each leaf key in `origin`."""
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, src, dotted + ".")
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
            origin[dotted] = src
            if isinstance(value, Mapping):
                for sub in _leaf_keys(value, dotted + "."):
                    origin[sub] = src


def _leaf_keys(d: Mapping, prefix: str) -> Iterable[str]:
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _leaf_keys(v, f"{prefix}{k}.")


def _load_tree(path: Path, origin: dict, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'inherit' forms a cycle: {' -> '.join(map(str, seen + (path,)))}")
    data = _read_yaml(path)
    parents = data.pop("inherit", None) or []
    if isinstance(parents, str):
        parents = [parents]
    tree: dict = {}
    for parent in parents:
        _merge(tree, _load_tree(path.parent / parent, origin, seen + (path,)), {}, str(path))
    # The parents' keys keep the provenance their own files recorded; this file's keys override them.
    _merge(tree, data, origin, str(path))
    return tree


def parse_override(item: str) -> tuple[list[str], Any]:
    """`"a.b=3"` -> (["a", "b"], 3). Values are parsed as YAML so numbers, bools and lists work."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.max_steps=100")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key; expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


# ----------------------------------------------------------------------------------------------------
# Building the dataclass tree with type checks


def _src(origin: Mapping[str, str], key: str) -> str:
    """The file or flag a dotted key came from (its nearest recorded ancestor's, else '<config>')."""
    key = re.sub(r"\[\d+\]", "", key)
    while key:
        if key in origin:
            return origin[key]
        key = key.rpartition(".")[0]
    return origin.get("", "<config>")


def _coerce(value: Any, tp: Any, key: str, origin: Mapping[str, str]) -> Any:
    """Check (and lightly coerce: int -> float) `value` against annotation `tp`."""
    where = _src(origin, key)
    kind = typing.get_origin(tp)
    args = typing.get_args(tp)
    if kind in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, origin)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: '{key}' has no valid type")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, origin, key)
    if kind in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if kind is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: '{key}' must be {getattr(tp, '__name__', tp)}, got {value!r}")
    return value


def build(cls: type, data: Mapping, origin: Mapping[str, str] | str = "<dict>", prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types.

    `origin` maps dotted keys to the file or `--set` flag each came from (or is one file name).
    After construction the dataclass's own `validate()` runs, if it has one.
    """
    if isinstance(origin, str):
        origin = {"": origin}
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"{_src(origin, dotted)}: unknown key '{dotted}'. "
                              f"Known keys{' in ' + prefix if prefix else ''}: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(value, hints[key], dotted, origin)
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "validate", None)
        if callable(check):
            check()
    except ConfigError as e:
        raise ConfigError(f"{_src(origin, prefix)}: {e}") from None
    return obj


# ----------------------------------------------------------------------------------------------------
# Public entry points


def load_config(path: str | Path | None, overrides: Iterable[str] = (), cls: type | None = None) -> Any:
    """Load a YAML config (following `inherit`), apply `--set` overrides, build and validate the tree."""
    from common.schema import Config

    cls = cls or Config
    origin: dict[str, str] = {}
    tree = _load_tree(Path(path), origin) if path else {}
    for item in overrides:
        keys, value = parse_override(item)
        node = tree
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: '{k}' is not a section")
            node = nxt
        node[keys[-1]] = value
        origin[".".join(keys)] = f"--set {item}"
        for sub in _leaf_keys(value, ".".join(keys) + ".") if isinstance(value, Mapping) else ():
            origin[sub] = f"--set {item}"
    origin.setdefault("", str(path) if path else "<defaults>")
    return build(cls, tree, origin)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False, width=110)


def save_resolved(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config (every key, defaults included) as YAML, atomically."""
    write_bytes_atomic(path, dump_yaml(cfg).encode("utf-8"))


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The `--config FILE` and repeatable `--set key=value` flags every entry point takes."""
    parser.add_argument("--config", default=default, required=default is None,
                        help="YAML config file (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.max_steps=100 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Any:
    return load_config(args.config, args.overrides)


def _main(argv: list[str] | None = None) -> int:
    """`python -m common.config get KEY --config F [--set ...]`: print one resolved value (for make)."""
    parser = argparse.ArgumentParser(prog="python -m common.config")
    sub = parser.add_subparsers(dest="cmd", required=True)
    get = sub.add_parser("get", help="print the resolved value of a dotted key")
    get.add_argument("key")
    add_config_args(get)
    show = sub.add_parser("show", help="print the whole resolved config as YAML")
    add_config_args(show)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"config error: {e}", file=__import__("sys").stderr)
        return 2
    if args.cmd == "show":
        print(dump_yaml(cfg), end="")
        return 0
    node: Any = cfg
    for part in args.key.split("."):
        if not hasattr(node, part):
            print(f"config error: no key '{args.key}'", file=__import__("sys").stderr)
            return 2
        node = getattr(node, part)
    print(node if not isinstance(node, bool) else str(node).lower())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
