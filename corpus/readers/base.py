"""What every reader shares: the error log, opening (compressed) files, the unit of work (Segment).

Public names: ErrorLog, Segment, compression_of, open_stream, get_field, BLOCK, HEAD, SNIFF,
MAX_ERRORS_PER_KIND.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import zstandard

BLOCK = 1 << 20            # bytes read per block
HEAD = 1 << 16             # bytes sniffed for the format
SNIFF = 1 << 20            # bytes sampled to decide the encoding (a proportion over this many bytes)
MAX_ERRORS_PER_KIND = 20   # per file and error kind, listed in the manifest; the rest only counted

_MAGIC = [(b"BZh", "bz2"), (b"\x1f\x8b", "gz"), (b"\x28\xb5\x2f\xfd", "zst"), (b"\xfd7zXZ\x00", "xz")]
COMP_EXT = {".bz2": "bz2", ".gz": "gz", ".zst": "zst", ".zstd": "zst", ".xz": "xz"}


@dataclass
class ErrorLog:
    """Bad-input records: the first MAX_ERRORS_PER_KIND per (file, kind) listed, all counted.

    `take()` adds, for every (file, kind) over the cap, one entry saying how many more there were."""

    entries: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)     # kind -> n
    _per: dict = field(default_factory=dict)

    def add(self, file: str, kind: str, msg: str, line: Optional[int] = None, offset: Optional[int] = None) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        key = (file, kind)
        self._per[key] = self._per.get(key, 0) + 1
        if self._per[key] <= MAX_ERRORS_PER_KIND:
            e: dict = {"file": file, "kind": kind}
            if line is not None:
                e["line"] = line
            if offset is not None:
                e["offset"] = offset
            e["error"] = msg
            self.entries.append(e)

    def take(self) -> tuple[list[dict], dict]:
        """Return and clear (entries, counts); capped kinds end with a `{"more": n}` entry."""
        for (file, kind), n in self._per.items():
            if n > MAX_ERRORS_PER_KIND:
                more = n - MAX_ERRORS_PER_KIND
                self.entries.append({"file": file, "kind": kind, "more": more,
                                     "error": f"{more} more '{kind}' errors in this file not listed "
                                              f"(the first {MAX_ERRORS_PER_KIND} are)"})
        out = (self.entries, self.counts)
        self.entries, self.counts, self._per = [], {}, {}
        return out


def compression_of(path: str) -> str:
    """'bz2' | 'gz' | 'zst' | 'xz' | '' from the magic bytes (extension as fallback)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        head = b""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return COMP_EXT.get(os.path.splitext(path)[1].lower(), "") if not head else ""


def open_stream(path: str, comp: str) -> tuple[Any, Any]:
    """(decompressed binary stream, raw file) for `path`; raw.tell() is the on-disk position."""
    raw = open(path, "rb")
    if comp == "bz2":
        return bz2.BZ2File(raw), raw
    if comp == "gz":
        return gzip.GzipFile(fileobj=raw), raw
    if comp == "zst":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw
    if comp == "xz":
        return lzma.LZMAFile(raw), raw
    return raw, raw


def base_name(path: str) -> str:
    """File name without a compression extension: 'a.jsonl.zst' -> 'a.jsonl'."""
    name = os.path.basename(path)
    root, ext = os.path.splitext(name)
    return root if ext.lower() in COMP_EXT else name


def get_field(rec: Any, path: str) -> Any:
    """`rec["a"]["b"]` for path "a.b" (a key holding a dot itself is tried whole first); None if absent."""
    if isinstance(rec, dict) and path in rec:
        return rec[path]
    for key in path.split("."):
        if not isinstance(rec, dict):
            return None
        rec = rec.get(key)
    return rec


@dataclass
class Segment:
    """A piece of one input file. start/end: byte range (uncompressed text/JSONL only); stride (k, i): keep
    documents whose index % k == i (whole file). The other fields are the input's settings
    (common/schema.py InputSpec); pii/normalize_repeats/drop_placeholders None = by format."""

    path: str
    source: str
    format: str = "auto"
    encoding: str = "auto"
    text_field: str = "text"
    doc_sep: str = "line"
    json_path: str = ""
    utterance_form: str = "form"
    pii: Optional[bool] = None
    normalize_repeats: Optional[bool] = None
    drop_placeholders: Optional[bool] = None
    start: int = 0
    end: Optional[int] = None
    stride: tuple[int, int] = (1, 0)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["stride"] = list(self.stride)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Segment":
        d = dict(d)
        d["stride"] = tuple(d.get("stride", (1, 0)))
        return cls(**d)


class Prefixed(io.RawIOBase):
    """A stream that returns `head` first, then the rest of `stream` (after sniffing)."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream
        self.pos = 0   # bytes returned so far (decompressed position, for error reports)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.stream.read(), b""
            else:
                out, self.head = self.head[:n], self.head[n:]
        else:
            out = self.stream.read(n)
        self.pos += len(out)
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)
