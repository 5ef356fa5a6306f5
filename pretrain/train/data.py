"""Training samples from token shards: fixed windows, a seeded order, a global sample cursor.

    data = WindowDataset(shards_dir, "train", seq_len=1024, seed=1234, tokenizer_sha256=tok.sha256)
    micro_batches = data.batch_for_step(cursor, rank, world, micro_batch, accum)   # this rank's part
    cursor += micro_batch * accum * world                                          # = global batch

Samples are windows of `seq_len + 1` tokens taken with stride `seq_len` inside each `.bin` file
(documents `<s> ids </s>` run together; a window never spans two files), so every
token but the first of a file is a target exactly once per epoch. Window j of the split is
numbered over the files in manifest order.

Order: epoch e visits the windows in `np.random.default_rng([seed, e]).permutation(N)`. The global
sample cursor c (how many samples the run has consumed) names sample `perm_e[c % N]` with
e = c // N, so the order is a function of (seed, cursor) only: any number of workers sees the same
sequence of global batches, and a checkpoint that stores the cursor resumes exactly, even with
another number of workers. Within a global batch rank r takes the r-th contiguous slice, split
into `accum` micro-batches, so ranks read disjoint samples.
"""
from __future__ import annotations

import logging
from typing import Iterator, Optional

import numpy as np

from corpus.shards.read import ShardsError, TokenShards

log = logging.getLogger("pretrain.data")


class DataError(ValueError):
    """The shards cannot feed this run (too short, wrong tokenizer, vocabulary too large)."""


class WindowDataset:
    """One split of a shards directory as fixed windows of `seq_len + 1` tokens, int32."""

    def __init__(self, shards_dir: str, split: str, seq_len: int, seed: int = 0,
                 tokenizer_sha256: Optional[str] = None, vocab_size: Optional[int] = None):
        try:
            self.shards = TokenShards(shards_dir, split)
        except ShardsError as e:
            raise DataError(f"train.shards={shards_dir!r}: {e}") from None
        if tokenizer_sha256 is not None and self.shards.tokenizer_sha256 != tokenizer_sha256:
            raise DataError(
                f"train.shards={shards_dir!r} were made with tokenizer sha256 "
                f"{str(self.shards.tokenizer_sha256)[:12]}.., but the configured tokenizer (tokenizer.dir / "
                f"tokenizer.model) has {tokenizer_sha256[:12]}..: rebuild the shards with this tokenizer "
                "(make corpus) or point the config at the tokenizer they were made with")
        mvocab = self.shards.manifest.get("vocab_size")
        if vocab_size is not None and mvocab is not None and mvocab > vocab_size:
            raise DataError(f"train.shards={shards_dir!r} hold ids up to vocab_size {mvocab} but the model has "
                            f"{vocab_size}: set model.vocab_size: 0 (use the tokenizer's) or rebuild the shards")
        self.split, self.seq_len, self.seed = split, seq_len, seed
        # windows per file: a window starts at k*seq_len and needs seq_len+1 tokens
        counts = [max(0, (len(f) - 1) // seq_len) for f in self.shards.files]
        self._file_start = np.cumsum([0] + counts)          # first global window index of each file
        self.num_samples = int(self._file_start[-1])
        if self.num_samples == 0:
            raise DataError(f"train.shards={shards_dir!r} split {split!r} has {self.shards.num_tokens} tokens: "
                            f"not one window of train.seq_len+1 = {seq_len + 1}; lower train.seq_len or add text")
        self._perm_epoch = -1
        self._perm: Optional[np.ndarray] = None

    # -- sample order ---------------------------------------------------------------------------
    def permutation(self, epoch: int) -> np.ndarray:
        """The visiting order of epoch `epoch`: a permutation of range(num_samples), int64."""
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            self._perm_epoch = epoch
        return self._perm

    def sample_index(self, cursor: int) -> int:
        """Window index of global sample `cursor` (shuffled, epochs wrap)."""
        epoch, pos = divmod(int(cursor), self.num_samples)
        return int(self.permutation(epoch)[pos])

    def window(self, j: int) -> np.ndarray:
        """Window j in file order: (seq_len + 1,) int32 token ids."""
        k = int(np.searchsorted(self._file_start, j, side="right")) - 1
        start = (j - int(self._file_start[k])) * self.seq_len
        return np.asarray(self.shards.files[k][start:start + self.seq_len + 1], dtype=np.int32)

    def samples(self, cursor: int, n: int) -> np.ndarray:
        """Global samples cursor .. cursor+n-1 in order: (n, seq_len + 1) int32."""
        return np.stack([self.window(self.sample_index(c)) for c in range(cursor, cursor + n)])

    # -- batches ------------------------------------------------------------------------------
    def batch_for_step(self, cursor: int, rank: int, world: int, micro_batch: int, accum: int
                       ) -> list[np.ndarray]:
        """This rank's `accum` micro-batches, each (micro_batch, seq_len + 1) int32, of the global batch
        that starts at sample `cursor` and holds micro_batch * accum * world samples."""
        per_rank = micro_batch * accum
        block = self.samples(cursor + rank * per_rank, per_rank)
        return [block[i * micro_batch:(i + 1) * micro_batch] for i in range(accum)]

    def eval_batches(self, rank: int, world: int, micro_batch: int, max_batches: int) -> Iterator[np.ndarray]:
        """Deterministic validation batches, unshuffled, split across ranks: this rank's share
        (round robin) of the first `max_batches` micro-batches (micro_batch, seq_len + 1) int32 of the
        split (fewer when the split is short; the last may be smaller). The same windows every
        evaluation and for any number of workers."""
        total = min(self.num_samples, max_batches * micro_batch)
        n_batches = -(-total // micro_batch)
        for b in range(rank, n_batches, world):
            lo, hi = b * micro_batch, min(total, (b + 1) * micro_batch)
            yield np.stack([self.window(j) for j in range(lo, hi)])
