"""Clean-document parts: the writer the corpus stage uses and the reader every later stage uses.

Format (docs/CONTRACTS.md, "Clean documents"): `<dir>/part-NNNNN.jsonl.zst`, zstd-compressed JSONL,
one `{"text", "source", "id"}` per line, listed with counts and sha256 in `<dir>/manifest.json`
(written last: a directory without it is unfinished).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from common.io import read_json

MANIFEST = "manifest.json"
FORMAT = "kogpt-clean-v1"


def _zstd() -> Any:
    """The zstandard module, imported on first use: readers of token shards (the trainer, e.g. on a GPU
    machine without zstandard) import this package but never touch clean parts."""
    try:
        import zstandard
    except ImportError as e:
        raise ImportError("clean document parts are zstd-compressed: pip install zstandard (it is in "
                          "setup.cfg's install_requires)") from e
    return zstandard


def encode_doc(text: str, source: str, doc_id: str, meta: Optional[dict] = None) -> str:
    """One JSONL line (no newline) in the contract's key order; ~4x faster than json.dumps(dict).

    meta: the reader's metadata of the document ({"title", "date", ...}), written as "meta" when given."""
    enc = json.encoder.encode_basestring  # the C encoder behind json.dumps(ensure_ascii=False)
    if meta:
        return (f'{{"text":{enc(text)},"source":{enc(source)},"id":{enc(doc_id)},'
                f'"meta":{json.dumps(meta, ensure_ascii=False, separators=(",", ":"))}}}')
    return f'{{"text":{enc(text)},"source":{enc(source)},"id":{enc(doc_id)}}}'


class _HashingFile:
    """File wrapper that sha256-hashes and counts the (compressed) bytes written through it."""

    def __init__(self, f):
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.h.update(b)
        self.size += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


class PartWriter:
    """Writes zstd JSONL parts `<dir>/<prefix>-NNN.jsonl.zst`, starting a new one past `part_bytes`.

    Each part is written under a temporary name, fsynced and renamed when complete, so a killed run
    never leaves a half-written part under a final name. `close()` returns the finished parts:
    [{"file", "docs", "bytes" (UTF-8 text bytes), "size" (compressed bytes), "sha256"}].
    Memory: one zstd stream (a few MB) regardless of the data size.
    """

    def __init__(self, directory: str | os.PathLike, prefix: str, part_bytes: int, level: int = 3):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.part_bytes = prefix, part_bytes
        self._zstd = _zstd()
        self.cctx = self._zstd.ZstdCompressor(level=level)
        self.parts: list[dict] = []
        self._f = None

    def _open(self) -> None:
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.prefix}.", suffix=".tmp", dir=self.dir)
        self._raw = os.fdopen(fd, "wb")
        self._hf = _HashingFile(self._raw)
        self._f = self.cctx.stream_writer(self._hf, closefd=False)
        self._docs = self._bytes = self._jsonl = 0

    def write_lines(self, blob: bytes, docs: int, text_bytes: int) -> None:
        """Append `docs` JSONL lines (UTF-8, each ending in "\\n") holding `text_bytes` of text."""
        if not docs:
            return
        if self._f is None:
            self._open()
        self._f.write(blob)
        self._docs += docs
        self._bytes += text_bytes
        self._jsonl += len(blob)
        if self._jsonl >= self.part_bytes:
            self._finish()

    def _finish(self) -> None:
        self._f.flush(self._zstd.FLUSH_FRAME)
        self._f.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        name = f"{self.prefix}-{len(self.parts):03d}.jsonl.zst"
        os.chmod(self._tmp, 0o644)   # mkstemp makes 0600; parts are data for other users/stages
        os.replace(self._tmp, self.dir / name)
        self.parts.append({"file": name, "docs": self._docs, "bytes": self._bytes, "size": self._hf.size,
                           "sha256": self._hf.h.hexdigest()})
        self._f = None

    def close(self) -> list[dict]:
        if self._f is not None:
            self._finish()
        return self.parts

    def abort(self) -> None:
        """Drop the part in progress and every finished one (a unit that failed)."""
        if self._f is not None:
            try:
                self._raw.close()
            finally:
                os.unlink(self._tmp)
            self._f = None
        for p in self.parts:
            try:
                os.unlink(self.dir / p["file"])
            except FileNotFoundError:
                pass
        self.parts = []


def iter_part(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the documents of one part file."""
    with open(path, "rb") as raw:
        reader = _zstd().ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        for line in io.BufferedReader(reader, buffer_size=1 << 20):
            yield json.loads(line)


def read_manifest(clean_dir: str | os.PathLike) -> dict:
    path = Path(clean_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the corpus stage has not finished in {clean_dir}. "
                                "Run `python -m corpus clean --config <your config>` first (or `make clean-docs`).")
    m = read_json(path)
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    return m


def part_paths(clean_dir: str | os.PathLike) -> list[Path]:
    """The part files of a finished clean directory, in manifest order."""
    return [Path(clean_dir) / p["file"] for p in read_manifest(clean_dir)["parts"]]


def iter_documents(clean_dir: str | os.PathLike) -> Iterator[dict]:
    """Every document of a finished clean directory, part after part: {"text", "source", "id"}.

    Streams (one decompression buffer in memory); raises FileNotFoundError if the stage has not
    finished (no manifest.json).
    """
    for path in part_paths(clean_dir):
        yield from iter_part(path)


# ----------------------------------------------------------------------------------------------------
# Which split a document belongs to (the tokenizer sample and the shards must agree)


def doc_key(doc: dict) -> str:
    """What a document's split is keyed on: its id, or (no id) a hash of its text."""
    key = doc.get("id")
    if key is None or key == "":
        return "sha1:" + hashlib.sha1(str(doc.get("text", "")).encode("utf-8")).hexdigest()
    return str(key)


def is_valid_doc(key: str, seed: int, fraction: float) -> bool:
    """True when the document goes to the validation split: blake2b(seed, key) as a fraction of 2^64."""
    if fraction <= 0.0:
        return False
    h = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") < fraction * 2.0 ** 64
