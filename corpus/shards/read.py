"""Reading token shards: the numpy-memmap reader the trainer uses, and the tokenizer check.

Format (docs/CONTRACTS.md "Token shards"): `<split>_NNNNN.bin` holds little-endian uint16 ids, every
document `<s> ids </s>` (format v2; v1 had no `<s>` and is refused with the fix); `<split>_NNNNN.idx`
holds little-endian int64 token offsets, n_docs + 1
of them, offsets[0] = 0; `manifest.json` (written last) lists the files, counts, dtype and the sha256
of the tokenizer that made them. corpus/shards/ writes them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from common.io import read_json

FORMAT = "kogpt-shards-v2"      # v2: every document starts with <s> (v1: documents joined with </s> only)
_OLD_FORMATS = {"kogpt-shards-v1": "documents without their leading <s>"}
DTYPE = np.dtype("<u2")
IDX_DTYPE = np.dtype("<i8")
SPLITS = ("train", "valid")


class ShardsError(ValueError):
    """Shards are missing, inconsistent, or were made with another tokenizer (the message says the fix)."""


# ----------------------------------------------------------------------------------------------------
# Reading and checking shards


def _load_manifest(path: str | os.PathLike | dict) -> tuple[dict, Optional[Path]]:
    if isinstance(path, dict):
        return path, None
    p = Path(path)
    mf = p / "manifest.json" if p.is_dir() else p
    if not mf.is_file():
        raise ShardsError(f"{mf} is missing: build the shards first (make shards) or fix train.shards")
    m = read_json(mf)
    if m.get("format") in _OLD_FORMATS:
        raise ShardsError(f"{mf}: format {m['format']!r} ({_OLD_FORMATS[m['format']]}) is older than {FORMAT!r}, "
                          "which training, generation and evaluation assume: rebuild them with `make shards` "
                          "(the stage re-encodes this directory in place)")
    if m.get("format") != FORMAT:
        raise ShardsError(f"{mf}: format {m.get('format')!r}, expected {FORMAT!r}")
    return m, mf.parent


def check_tokenizer(manifest_or_dir: str | os.PathLike | dict, sha256: str) -> None:
    """Raise ShardsError unless the shards were made with the tokenizer whose model file has `sha256`."""
    m, where = _load_manifest(manifest_or_dir)
    made = m.get("tokenizer_sha256")
    if made != sha256:
        raise ShardsError(
            f"shards in {where or 'the given manifest'} were made with tokenizer sha256 {str(made)[:12]}.., but the "
            f"tokenizer in use has {sha256[:12]}..: rebuild them with this tokenizer (make shards, into a fresh "
            "shards.out_dir), or point tokenizer.dir/tokenizer.model at the tokenizer they were made with")


def _array(path: Path, dtype: np.dtype) -> np.ndarray:
    """Read-only memmap of a flat file; a zero-length file gives an empty array (mmap cannot map 0 bytes)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class TokenShards:
    """One split of a shards directory, memory-mapped.

    `.files[k]`: np.memmap uint16 (tokens,) of file k; `.offsets[k]`: int64 (docs_k + 1,) token offsets.
    `document(i)` and `read(start, n)` index the split as one stream (documents in manifest order).
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train",
                 tokenizer_sha256: Optional[str] = None) -> None:
        self.manifest, self.dir = _load_manifest(directory)
        if tokenizer_sha256 is not None:
            check_tokenizer(self.manifest, tokenizer_sha256)
        if split not in self.manifest["splits"]:
            raise ShardsError(f"{self.dir}: no split {split!r} (have {', '.join(self.manifest['splits'])})")
        self.split = split
        self.tokenizer_sha256: str = self.manifest["tokenizer_sha256"]
        self.eos_id: int = self.manifest["eos_id"]
        self.bos_id: int = self.manifest["bos_id"]
        self.files: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        for e in self.manifest["splits"][split]["files"]:
            b, i = self.dir / e["bin"], self.dir / e["idx"]
            if not b.is_file() or not i.is_file():
                raise ShardsError(f"{b} or its .idx is missing: the shards directory is incomplete; rebuild it")
            tokens, offs = _array(b, DTYPE), np.fromfile(i, dtype=IDX_DTYPE)
            if (len(tokens) != e["tokens"] or len(offs) != e["docs"] + 1 or offs[0] != 0
                    or offs[-1] != len(tokens)):
                raise ShardsError(f"{b}: {len(tokens)} tokens / {len(offs)} offsets do not match the manifest "
                                  f"({e['tokens']} tokens, {e['docs']} docs): the file is damaged; rebuild")
            self.files.append(tokens)
            self.offsets.append(offs)
        self._tok_start = np.cumsum([0] + [len(f) for f in self.files])
        self._doc_start = np.cumsum([0] + [len(o) - 1 for o in self.offsets])
        self.num_tokens = int(self._tok_start[-1])
        self.num_docs = int(self._doc_start[-1])

    def __len__(self) -> int:
        return self.num_docs

    def document(self, i: int) -> np.ndarray:
        """Document `i` (0 <= i < num_docs) as uint16 ids: bos, its text's ids, eos."""
        if not 0 <= i < self.num_docs:
            raise IndexError(f"document {i} out of range [0, {self.num_docs})")
        k = int(np.searchsorted(self._doc_start, i, side="right")) - 1
        j = i - int(self._doc_start[k])
        return self.files[k][self.offsets[k][j]:self.offsets[k][j + 1]]

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) of the split's concatenated stream (across files), as a new uint16 array."""
        if start < 0 or n < 0 or start + n > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + n}) out of range [0, {self.num_tokens})")
        out, pos = np.empty(n, DTYPE), 0
        k = int(np.searchsorted(self._tok_start, start, side="right")) - 1
        while pos < n:
            lo = start + pos - int(self._tok_start[k])
            take = min(n - pos, len(self.files[k]) - lo)
            out[pos:pos + take] = self.files[k][lo:lo + take]
            pos, k = pos + take, k + 1
        return out
