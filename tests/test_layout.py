"""The code's layout holds what README promises: layers import only downward, no module imports another
that imports it back (imports inside functions count too), every package says what it is for, and
modules stay under the size guideline."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "corpus", "pretrain")
LAYER = {"common": 0, "corpus": 1, "pretrain": 2}
MAX_LINES = 560  # the guideline is ~500; a module past this must be split


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = p
    return mods


def _imports(path: Path, name: str, mods: dict[str, Path]) -> set[str]:
    """Project modules `name` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                out.add(sub if sub in mods else target)
    return {m for m in out if m in mods and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, name, mods) for name, path in mods.items()}


def test_layers_import_only_downward(graph):
    wrong = [f"{a} imports {b}" for a, deps in graph.items() for b in deps
             if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]]
    assert not wrong, "common -> corpus -> pretrain is the only allowed direction:\n" + "\n".join(wrong)


def _package_of(mod: str, graph: dict[str, set[str]]) -> str:
    return mod.rsplit(".", 1)[0] if "." in mod else mod


def test_no_import_cycles(graph):
    # A package's __init__ re-exporting its own submodules is how the public names are gathered, not a
    # cycle between ideas: edges from a package to the modules inside it are left out.
    def deps(m: str) -> set[str]:
        return {d for d in graph[m] if not (d.startswith(m + ".") and (REPO / m.replace(".", "/")).is_dir())}

    color: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        color[m] = 1
        stack.append(m)
        for d in sorted(deps(m)):
            if color.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in color:
                visit(d)
        stack.pop()
        color[m] = 2

    for m in sorted(graph):
        if m not in color:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_package_has_a_docstring():
    missing = [str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("__init__.py")
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"packages without a docstring naming their role and public names: {missing}"


def test_modules_stay_small():
    big = [f"{p.relative_to(REPO)}: {n} lines" for p in _modules().values()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not big, f"split these along their ideas: {big}"


def test_entry_points_users_type_still_import():
    import importlib

    for name in ("pretrain.train", "pretrain.generate", "pretrain.export", "pretrain.convert", "pretrain.evaluate",
                 "pretrain.api", "corpus.shards"):
        mod = importlib.import_module(name)
        assert callable(getattr(mod, "main", None)) or name == "pretrain.api", name
    from pretrain.api import get_pytorch_model, get_sentencepiece_tokenizer  # noqa: F401 - the seed's imports
