"""AI Hub datasets: JSON files inside zip archives (read in place, never unpacked), or plain JSON.

Every dataset has its own schema, so where the text is is a setting, `json_path`: keys separated by
dots, `[]` after a key holding a list, e.g. `SJML.text[].content`. Each item of the first list in the
path is one document (the whole JSON when the path has no list); the strings the rest of the path
reaches inside it are joined by newlines. Members are streamed with ijson up to that first list, so a
member holding a whole dataset is not loaded at once.

A member that is not valid JSON, is not UTF-8, or has nothing at `json_path` is reported (archive,
member name and, for syntax errors, the item index) and the rest of the archive is read. Members
that are not `.json` (images, audio, `__MACOSX/`) are skipped; a zip inside the zip is reported (unpack
the outer one). Shares: with k readers per archive, reader i takes members i, i+k, ...
"""
from __future__ import annotations

import codecs
import zipfile
from typing import Any, Callable, Iterator

import ijson

from corpus.readers.base import ErrorLog, Segment


def parse_path(path: str) -> tuple[str, list[tuple[str, bool]]]:
    """'a.b[].c[].d' -> ('a.b.item', [('c', True), ('d', False)]): the ijson prefix of the documents
    (items of the first list) and the steps inside each; ('a.b', []) when there is no list."""
    steps = [(s[:-2], True) if s.endswith("[]") else (s, False) for s in path.split(".")]
    for i, (key, is_list) in enumerate(steps):
        if is_list:
            return ".".join(k for k, _ in steps[:i + 1]) + ".item", steps[i + 1:]
    return ".".join(k for k, _ in steps), []


def collect(node: Any, steps: list[tuple[str, bool]], out: list[str]) -> None:
    """Append the strings that `steps` reach from `node` to `out` (missing keys reach nothing)."""
    if not steps:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):   # a list of strings at the end of the path
            out.extend(x for x in node if isinstance(x, str))
        return
    key, is_list = steps[0]
    if not isinstance(node, dict):
        return
    nxt = node.get(key)
    if is_list:
        for x in nxt if isinstance(nxt, list) else ():
            collect(x, steps[1:], out)
    else:
        collect(nxt, steps[1:], out)


class _SkipBOM:
    """Drop a UTF-8 byte-order mark at the start of a stream (ijson rejects it)."""

    def __init__(self, f):
        self.f, self.first = f, True

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        if self.first and b:   # (ijson first reads 0 bytes to tell bytes from str)
            self.first = False
            if b.startswith(codecs.BOM_UTF8):
                b = b[3:]
        return b


def _documents(f, prefix: str, steps: list[tuple[str, bool]]) -> Iterator[str]:
    """Text of each document in one JSON stream."""
    for item in ijson.items(_SkipBOM(f), prefix):
        out: list[str] = []
        collect(item, steps, out)
        yield "\n".join(t.strip() for t in out if t.strip())


def read_aihub(stream, seg: Segment, name: str, errors: ErrorLog, tick: Callable[[], None],
               mine: Callable[[int], bool], is_zip: bool) -> Iterator[tuple[str, str]]:
    """(text, doc_id) for an AI Hub zip (`stream`: the seekable file; members read in place) or a single
    AI Hub JSON file (`stream`: its decompressed bytes)."""
    prefix, steps = parse_path(seg.json_path)
    if not is_zip:
        yield from _member(stream, f"{seg.source}:{name}", name, name, prefix, steps, seg, errors, tick)
        return
    with zipfile.ZipFile(stream) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
        for idx, info in enumerate(infos):
            if not mine(idx):
                continue
            tick()
            member = info.filename
            low = member.lower()
            if low.endswith(".zip"):
                errors.add(name, "aihub_member", f"{member}: a zip inside the zip is not read; unpack {name} once "
                           "and list the inner zips as inputs")
                continue
            if not low.endswith(".json"):
                continue
            try:
                with zf.open(info) as f:
                    yield from _member(f, f"{seg.source}:{name}/{member}", name, member, prefix, steps, seg,
                                       errors, tick)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as e:
                errors.add(name, "aihub_member", f"{member}: cannot be read from the zip ({type(e).__name__}: {e}); "
                           "skipped")


def _member(f, id_prefix: str, name: str, member: str, prefix: str, steps, seg: Segment, errors: ErrorLog,
            tick) -> Iterator[tuple[str, str]]:
    n = found = 0
    try:
        for i, text in enumerate(_documents(f, prefix, steps)):
            n += 1
            if i % 256 == 255:
                tick()
            if text:
                found += 1
                yield text, f"{id_prefix}:{i}"
    except (ijson.JSONError, ValueError) as e:   # syntax errors and invalid UTF-8
        errors.add(name, "json", f"{member}: invalid JSON after item #{n} ({type(e).__name__}: {e}); "
                   "rest of the member skipped")
        return
    if not found:
        errors.add(name, "aihub_path", f"{member}: no text at json_path {seg.json_path!r} "
                   "(corpus.inputs[].json_path)")
