"""Writing token shards: one `.bin`/`.idx` pair appended to in order, and merging part files into
shards of at most `shards.shard_tokens` tokens cut at document boundaries (the format is in
corpus/shards/__init__.py and docs/CONTRACTS.md)."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from common.io import atomic_open, write_json_atomic
from corpus.shards.read import (
    DTYPE, FORMAT, IDX_DTYPE, SPLITS, ShardsError, _array, _load_manifest, check_tokenizer)
from corpus.tokenizer import Tokenizer

log = logging.getLogger("corpus.shards")


# ----------------------------------------------------------------------------------------------------
# Writing: one output file pair, appended to in order


class _BinWriter:
    """Appends documents to `<stem>.bin`/`.idx` under temporary names; `close()` renames them into place."""

    def __init__(self, stem: Path) -> None:
        self.stem, self.tokens, self.docs = stem, 0, 0
        self._cm = atomic_open(stem.parent / (stem.name + ".bin"), "wb")
        self._f = self._cm.__enter__()
        self._sha = hashlib.sha256()
        self._offsets: list[np.ndarray] = [np.zeros(1, IDX_DTYPE)]

    def write(self, tokens: np.ndarray, rel_offsets: np.ndarray) -> None:
        """`tokens`: uint16 ids of whole documents; `rel_offsets`: their ends relative to tokens[0]."""
        step = 1 << 25  # 64 MiB of uint16 at a time
        for lo in range(0, len(tokens), step):
            buf = np.ascontiguousarray(tokens[lo:lo + step], dtype=DTYPE).tobytes()
            self._f.write(buf)
            self._sha.update(buf)
        self._offsets.append(np.asarray(rel_offsets, IDX_DTYPE) + self.tokens)
        self.tokens += len(tokens)
        self.docs += len(rel_offsets)

    def close(self) -> dict:
        self._cm.__exit__(None, None, None)
        with atomic_open(self.stem.parent / (self.stem.name + ".idx"), "wb") as f:
            f.write(np.concatenate(self._offsets).astype(IDX_DTYPE).tobytes())
        return {"bin": self.stem.name + ".bin", "idx": self.stem.name + ".idx", "tokens": self.tokens,
                "docs": self.docs, "sha256": self._sha.hexdigest()}

    def abort(self) -> None:
        self._cm.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary file


def merge_files(inputs: Sequence[tuple[Path, Path]], out_dir: Path, split: str, shard_tokens: int) -> list[dict]:
    """Concatenate (bin, idx) pairs in order into `<split>_NNNNN.bin/.idx` of <= shard_tokens tokens each.

    Files are cut at document boundaries; a document longer than shard_tokens gets a file of its own.
    """
    entries: list[dict] = []
    cur: Optional[_BinWriter] = None
    try:
        for b, i in inputs:
            toks, offs = _array(b, DTYPE), np.fromfile(i, dtype=IDX_DTYPE)
            d, n = 0, len(offs) - 1
            while d < n:
                if cur is None:
                    cur = _BinWriter(out_dir / f"{split}_{len(entries):05d}")
                room = shard_tokens - cur.tokens
                j = int(np.searchsorted(offs, offs[d] + room, side="right")) - 1
                if j <= d:
                    if cur.tokens:
                        entries.append(cur.close())
                        cur = None
                        continue
                    j = d + 1
                cur.write(toks[offs[d]:offs[j]], offs[d + 1:j + 1] - offs[d])
                d = j
        if cur is not None and cur.docs:
            entries.append(cur.close())
        elif cur is not None:
            cur.abort()
    except BaseException:
        if cur is not None:
            cur.abort()
        raise
    return entries


def _write_manifest(out_dir: Path, tok_info: dict, splits: dict[str, list[dict]], extra: dict) -> dict:
    m = {"format": FORMAT, "dtype": "uint16", "vocab_size": tok_info["vocab_size"], "bos_id": tok_info["bos_id"],
         "eos_id": tok_info["eos_id"],
         "tokenizer_sha256": tok_info["sha256"],
         "splits": {s: {"tokens": sum(e["tokens"] for e in files), "docs": sum(e["docs"] for e in files),
                        "files": files} for s, files in splits.items()}}
    m.update(extra)
    write_json_atomic(out_dir / "manifest.json", m)
    return m


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for p in list(out_dir.glob("train_*.*")) + list(out_dir.glob("valid_*.*")):
        if p.suffix in (".bin", ".idx") and p.name not in keep:
            p.unlink()


def merge_shard_dirs(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                     shard_tokens: int = 500_000_000) -> dict:
    """Merge shard directories (same tokenizer only) into one, documents in input order; returns its manifest."""
    mans = [_load_manifest(p) for p in inputs]
    if not mans:
        raise ShardsError("merge: give at least one shards directory")
    sha = mans[0][0]["tokenizer_sha256"]
    for m, where in mans[1:]:
        if m.get("tokenizer_sha256") != sha:
            raise ShardsError(f"refusing to merge {where} (tokenizer sha256 {str(m.get('tokenizer_sha256'))[:12]}..) "
                              f"with {mans[0][1]} (tokenizer sha256 {sha[:12]}..): shards made by different "
                              "tokenizers cannot be mixed; re-encode one of them with the other's tokenizer")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").is_file():
        check_tokenizer(out, sha)
        (out / "manifest.json").unlink()
    splits = {s: merge_files([(w / e["bin"], w / e["idx"]) for m, w in mans for e in m["splits"][s]["files"]],
                             out, s, shard_tokens) for s in SPLITS}
    _remove_stale(out, {e[k] for files in splits.values() for e in files for k in ("bin", "idx")})
    first_dir = mans[0][1]
    if (first_dir / "tokenizer").is_dir() and first_dir.resolve() != out.resolve():
        Tokenizer.load(first_dir / "tokenizer").save(out / "tokenizer")
    info = {"vocab_size": mans[0][0]["vocab_size"], "bos_id": mans[0][0]["bos_id"], "eos_id": mans[0][0]["eos_id"],
            "sha256": sha}
    return _write_manifest(out, info, splits, {"merged_from": [str(w) for _, w in mans],
                                                "tokenizer": mans[0][0].get("tokenizer", {})})
