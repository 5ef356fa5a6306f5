"""Exact and near-duplicate (MinHash/LSH) document removal across the whole corpus.

Split of work:
* workers (`DedupHasher`, many processes): a 64-bit hash of each document's cleaned text (exact
  dedup) and, for documents of at least `dedup.min_chars` characters, the LSH band keys of its
  MinHash signature (near dedup), computed in numpy for a whole batch at once;
* the coordinator (one process): once every unit is hashed, `plan_order_duplicates` decides for the
  whole corpus at once (sorting the keys) which documents are duplicates of one earlier in plan
  order, so the result never depends on which worker finished first. `DedupIndex` makes the same
  decisions incrementally, batch by batch (kept for callers that stream). The decision sees the
  whole corpus, not a file.

MinHash: character `shingle_chars`-grams of the cleaned text, hashed with a 64-bit polynomial
rolling hash and a mixing step; `b * r <= num_perm` permutations h_i(x) = (a_i x + c_i) mod 2^64
(a_i odd, the multiply-add-shift family), keeping the high 32 bits of the minimum. (b, r) come from
datasketch's `_optimal_param(threshold, num_perm)` (equal weight on false positives and negatives),
e.g. threshold 0.8 / 64 permutations -> b=5 bands of r=11 rows. A document is a near duplicate when
one of its b band keys equals a band key of an earlier document (the standard LSH candidate rule,
without pairwise verification, as in text-dedup/datatrove). We hash ourselves instead of using
datasketch's `MinHash.bulk` because that hashes each shingle with sha1 in Python (~1 us per
shingle; see bench/corpus_throughput.py), which alone would be slower than the whole stage.

Memory: the coordinator holds 8 bytes per kept document (exact) plus 8 * b bytes per near-checked
document, plus ~1/16 of that while sorting (by key slices); it grows with the number of documents,
not bytes (e.g. 30 M documents with b=5: ~1.4 GB of keys).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from common.schema import DedupConfig

_U64 = np.uint64
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_POLY = _U64(0x100000001B3)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place on a uint64 array (spreads the polynomial hash's bits)."""
    h ^= h >> _U64(30)
    h *= _MIX1
    h ^= h >> _U64(27)
    h *= _MIX2
    h ^= h >> _U64(31)
    return h


@lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing false positive + false negative probability mass (datasketch)."""
    from datasketch.lsh import _optimal_param

    return tuple(int(x) for x in _optimal_param(threshold, num_perm, 0.5, 0.5))


def exact_hash(texts: list[str]) -> np.ndarray:
    """(n,) uint64 content hash of each text (see exact_hash_arr)."""
    if not texts:
        return np.zeros(0, np.uint64)
    arr = np.frombuffer("\x00".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return exact_hash_arr(arr, len(texts))


class DedupHasher:
    """Worker side: exact hashes and LSH band keys for batches of cleaned documents."""

    def __init__(self, cfg: DedupConfig, seed: int = 0x5EED):
        self.cfg = cfg
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        rng = np.random.RandomState(seed)
        n = self.bands * self.rows
        self.a = rng.randint(0, 2**62, size=n, dtype=np.int64).astype(np.uint64) * _U64(2) + _U64(1)
        self.c = rng.randint(0, 2**62, size=n, dtype=np.int64).astype(np.uint64) * _U64(3)
        self.band_salt = rng.randint(0, 2**62, size=self.bands, dtype=np.int64).astype(np.uint64)

    def signatures(self, texts: list[str], chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
        """MinHash signatures of `texts`.

        Returns (rows, sig): rows (m,) int64 indices of the texts that have at least one shingle,
        sig (m, bands*rows) uint32.
        """
        arr = np.frombuffer("\x00".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        return self._signatures(arr, np.ones(len(texts), dtype=bool), chunk)

    def _signatures(self, arr: np.ndarray, use: np.ndarray, chunk: int = 1 << 18
                    ) -> tuple[np.ndarray, np.ndarray]:
        """arr: code points (uint64) of documents joined by 0; use (n_docs,) bool: which to sign."""
        k = self.cfg.shingle_chars
        empty = np.zeros(0, np.int64), np.zeros((0, len(self.a)), np.uint32)
        n = len(arr) - k + 1
        if n <= 0 or not use.any():
            return empty
        h = np.zeros(n, dtype=np.uint64)
        for t in range(k):
            h *= _POLY
            h += arr[t:t + n]
        sep = np.concatenate([[0], np.cumsum(arr == 0)])
        doc = sep[:n]
        valid = (sep[k:k + n] == doc) & use[doc]     # no separator inside the window, document wanted
        doc = doc[valid]
        h = _mix(h[valid])
        if not len(h):
            return empty
        starts = np.flatnonzero(np.concatenate([[True], doc[1:] != doc[:-1]]))
        rows = doc[starts].astype(np.int64)
        sig = np.empty((len(rows), len(self.a)), dtype=np.uint64)
        # chunk over documents so the temporary stays ~chunk x 8 bytes
        step = max(1, len(starts) * chunk // len(h))
        buf = np.empty(len(h), dtype=np.uint64)
        for lo in range(0, len(starts), step):
            hi = min(lo + step, len(starts))
            s0 = starts[lo]
            s1 = starts[hi] if hi < len(starts) else len(h)
            seg = h[s0:s1]
            st = starts[lo:hi] - s0
            b = buf[:len(seg)]
            for i in range(len(self.a)):
                np.multiply(seg, self.a[i], out=b)
                b += self.c[i]
                sig[lo:hi, i] = np.minimum.reduceat(b, st)
        return rows, (sig >> _U64(32)).astype(np.uint32)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(m, bands*rows) uint32 signatures -> (m, bands) uint64 LSH keys (band index salted in)."""
        s = sig.reshape(len(sig), self.bands, self.rows).astype(np.uint64)
        acc = np.zeros((len(sig), self.bands), dtype=np.uint64)
        for t in range(self.rows):
            acc *= _POLY
            acc += s[:, :, t]
        acc += self.band_salt
        return _mix(acc)

    def hash_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Everything the parent needs for a batch of kept (non-empty) documents.

        Returns (exact (n,) uint64, near_rows (m,) int64 indices into texts, near_keys (m, bands) uint64).
        """
        n = len(texts)
        if not n:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros((0, self.bands), np.uint64)
        arr = np.frombuffer("\x00".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        ex = exact_hash_arr(arr, n) if self.cfg.exact else np.zeros(n, np.uint64)
        if not self.cfg.near:
            return ex, np.zeros(0, np.int64), np.zeros((0, self.bands), np.uint64)
        lengths = np.fromiter(map(len, texts), np.int64, n)
        rows, sig = self._signatures(arr, lengths >= self.cfg.min_chars)
        return ex, rows, self.band_keys(sig)


def exact_hash_arr(arr: np.ndarray, n_docs: int) -> np.ndarray:
    """(n_docs,) uint64 content hash of each document in `arr` (uint64 code points joined by 0).

    Sum over characters of splitmix64(code point, position in document), then mixed with the length:
    vectorized over the batch (a per-document blake2b costs ~1.5 us/doc, this ~20 ns/char).
    Two different documents collide with probability ~2^-64; a one-character change never collides
    (splitmix64 is a bijection).
    """
    is_sep = arr == 0
    starts = np.concatenate([[0], np.flatnonzero(is_sep) + 1])          # (n_docs,) int64
    assert len(starts) == n_docs, (len(starts), n_docs)
    doc = np.cumsum(is_sep)
    pos = np.arange(len(arr), dtype=np.int64) - starts[doc]
    v = _mix(arr * _U64(0x9E3779B97F4A7C15) + pos.astype(np.uint64))
    v[is_sep] = 0
    v = np.concatenate([v, np.zeros(1, np.uint64)])   # so a trailing empty document has a slot
    total = np.add.reduceat(v, starts)                 # empty documents sum a 0 slot
    lengths = np.diff(np.concatenate([starts, [len(arr) + 1]])) - 1
    return _mix(total + _mix(lengths.astype(np.uint64) + _U64(1)))


class U64Set:
    """A growing set of uint64 keys as a few sorted numpy arrays (8 bytes per key, log-many levels)."""

    def __init__(self) -> None:
        self.levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(x) for x in self.levels)

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.levels)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        out = np.zeros(len(keys), dtype=bool)
        for lv in self.levels:
            idx = np.searchsorted(lv, keys)
            idx[idx == len(lv)] = 0
            out |= lv[idx] == keys
        return out

    def add(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        self.levels.append(np.unique(keys))
        # merge like a binary counter: amortized O(log n) work per key, O(log n) levels
        while len(self.levels) > 1 and len(self.levels[-2]) <= 2 * len(self.levels[-1]):
            b = self.levels.pop()
            a = self.levels.pop()
            m = np.concatenate([a, b])
            m.sort(kind="stable")   # two sorted runs: timsort merges them in O(n)
            self.levels.append(m)


def _earlier_in_batch(keys: np.ndarray) -> np.ndarray:
    """Bool mask: this key occurred at an earlier position of `keys`."""
    _, first = np.unique(keys, return_index=True)
    seen = np.ones(len(keys), dtype=bool)
    seen[first] = False
    return seen


class DedupIndex:
    """Parent side: every key seen so far; decides which documents of a batch are duplicates."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.exact = U64Set()
        self.near = U64Set()

    def decide(self, exact: np.ndarray, near_rows: np.ndarray, near_keys: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Classify a batch and add its keys to the index.

        exact (n,) uint64, near_rows (m,) int64, near_keys (m, bands) uint64 as from `hash_batch`.
        Returns (exact_dup (n,) bool, near_dup (n,) bool, exact keys added, near keys added) — the last
        two are what a resumed run must reload (`load`).
        """
        n = len(exact)
        ex_dup = np.zeros(n, dtype=bool)
        if self.cfg.exact and n:
            ex_dup = self.exact.contains(exact) | _earlier_in_batch(exact)
        ex_added = exact[~ex_dup] if self.cfg.exact else np.zeros(0, np.uint64)
        self.exact.add(ex_added)
        near_dup = np.zeros(n, dtype=bool)
        nk_added = np.zeros(0, np.uint64)
        if self.cfg.near and len(near_rows):
            live = ~ex_dup[near_rows]
            rows, keys = near_rows[live], near_keys[live]
            flat = keys.reshape(-1)
            hit = self.near.contains(flat) | _earlier_in_batch(flat)
            near_dup[rows[hit.reshape(keys.shape).any(axis=1)]] = True
            # every checked document's keys stay in the index, duplicates too (their near copies
            # are then caught as well, like keeping one document per connected cluster)
            nk_added = flat
            self.near.add(flat)
        return ex_dup, near_dup, ex_added, nk_added

    def load(self, exact: np.ndarray, near: np.ndarray) -> None:
        """Reload the keys a finished unit added (resume)."""
        self.exact.add(exact.astype(np.uint64))
        self.near.add(near.astype(np.uint64))

    def stats(self) -> dict:
        return {"index_exact_keys": len(self.exact), "index_near_keys": len(self.near),
                "index_bytes": self.exact.nbytes + self.near.nbytes}


def first_occurrence(keys: np.ndarray, shard_above: int = 1 << 22) -> np.ndarray:
    """Bool mask (n,): keys[i] is the first occurrence of its value in `keys` (stable sort, O(n log n)).

    Past `shard_above` keys the sort runs on 16 slices by the keys' top 4 bits (equal keys share a
    slice), so its temporaries are ~1/16 of the keys instead of ~3x them.
    """
    first = np.zeros(len(keys), dtype=bool)
    if len(keys) <= shard_above:
        if len(keys):
            first[np.unique(keys, return_index=True)[1]] = True   # return_index sorts stably: earliest index
        return first
    top = (keys >> np.uint64(60)).astype(np.uint8)
    for s in range(16):
        idx = np.flatnonzero(top == s)                 # increasing: plan order kept within the slice
        first[idx[np.unique(keys[idx], return_index=True)[1]]] = True
    return first


def plan_order_duplicates(cfg: DedupConfig, exact: np.ndarray, near_rows: np.ndarray, near_keys: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Duplicate decisions for a whole corpus at once, as if its documents arrived in plan order.

    exact (n,) uint64: every kept document's content hash, in plan order; near_rows (m,) int64:
    increasing indices (into exact) of the near-checked documents; near_keys (m, bands) uint64.
    Returns (exact_dup (n,) bool, near_dup (n,) bool, index stats). The same rules as feeding
    `DedupIndex.decide` batch after batch in plan order: a document is an exact duplicate when an
    earlier one has its hash; a near duplicate when it is not an exact one and one of its band keys
    is a band key of an earlier near-checked, non-exact-duplicate document (duplicates' keys count
    too). Being a function of the plan order only, the result does not depend on which worker
    finished first. Memory: the keys plus ~1/16 of them while sorting (first_occurrence).
    """
    n = len(exact)
    ex_dup = ~first_occurrence(exact) if cfg.exact and n else np.zeros(n, dtype=bool)
    near_dup = np.zeros(n, dtype=bool)
    n_near = 0
    if cfg.near and len(near_rows):
        live = ~ex_dup[near_rows]
        rows, keys = near_rows[live], near_keys[live]
        flat = keys.reshape(-1)                         # row-major: plan order, then band
        hit = ~first_occurrence(flat)
        near_dup[rows[hit.reshape(keys.shape).any(axis=1)]] = True
        n_near = len(flat)
    n_exact = int(n - ex_dup.sum()) if cfg.exact else 0
    return ex_dup, near_dup, {"index_exact_keys": n_exact, "index_near_keys": n_near,
                              "index_bytes": 8 * (n_exact + n_near)}
