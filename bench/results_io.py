"""How every benchmark saves its numbers: `write_result(path, result)`.

One JSON per benchmark under bench/results/, written atomically (temporary name, then rename), with
paths made portable: this checkout's absolute path is dropped (paths become repo-relative) and the
shared data folder beside it becomes `../shared`, so committed results name no machine's paths.
Standard library only, so GPU-only machines without the project's dependencies can use it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _prefixes() -> list[tuple[str, str]]:
    shared = REPO.parent / "shared"
    pairs = [(str(shared.resolve()), "../shared"), (str(shared), "../shared"), (str(REPO) + os.sep, "")]
    return sorted(set(pairs), key=lambda p: -len(p[0]))   # longest first: the repo may sit inside shared's parent


def portable(obj: Any, prefixes: list[tuple[str, str]] | None = None) -> Any:
    """`obj` with machine-specific path prefixes in every string replaced (dicts and lists walked)."""
    prefixes = _prefixes() if prefixes is None else prefixes
    if isinstance(obj, str):
        for old, new in prefixes:
            obj = obj.replace(old, new)
        return obj
    if isinstance(obj, dict):
        return {k: portable(v, prefixes) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, prefixes) for v in obj]
    return obj


def write_result(path: str | os.PathLike, result: dict) -> Path:
    """Write `result` as indented JSON to `path` (atomically, portable paths); print and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(portable(result), indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {portable(str(path.resolve()))}")
    return path
