"""Sentences for tokenizer training: seeded, streaming, bounded, without splitting the whole corpus.

`sample_sentences` estimates the corpus's sentence count from a pilot (the first 512 KB of every
part), selects each line of the training documents with probability p = 1.25 x cap / estimate (a
seeded hash of document and line: worker-independent), splits only the selected lines (the regex
splitter; kiwi only for pieces longer than `tokenizer.max_sentence_chars`), and keeps a uniform
sample of at most `tokenizer.sample_sentences` of them in a seeded reservoir (Li's Algorithm L),
fed part after part in manifest order. So a 20 GB corpus is read once, only ~p of it is split,
memory is bounded by the cap, and the same corpus, config and seed give the same sample whatever
the worker count. Why regex first: kiwi costs ~25 ms per KB of text (the 22 MB dev corpus took
~560 s), and for BPE training a missed sentence end only joins two sentences on one line (pieces
never cross spaces), while a line too long for SentencePiece would be lost: kiwi is kept for those.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

from common.io import atomic_open
from corpus.docs import doc_key, is_valid_doc, iter_part, read_manifest
from corpus.errors import TokenizerError

log = logging.getLogger("corpus.tokenizer")

OVERSHOOT = 1.25          # lines are selected for ~1.25x the cap; the reservoir trims to the cap exactly
PILOT_BYTES = 1 << 19     # text bytes read from the start of every part to estimate sentences per byte
_M64 = (1 << 64) - 1


class Reservoir:
    """Uniform sample of at most `k` items from a stream of unknown length (Li's Algorithm L).

    Seeded: the same stream and seed give the same sample. Draws O(k log(n/k)) random numbers.
    """

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.items, self.seen = k, [], 0
        self._rng = random.Random(seed)
        self._w = 0.0
        self._next = 0  # 0-based stream index of the next item that enters a full reservoir

    def _u(self) -> float:
        return max(self._rng.random(), 1e-300)  # in (0, 1): keeps the logs finite

    def _skip(self) -> None:
        gap = math.log(self._u()) / math.log1p(-self._w)
        self._next += int(min(gap, 1e18)) + 1

    def add(self, item: Any) -> None:
        i, self.seen = self.seen, self.seen + 1
        if len(self.items) < self.k:
            self.items.append(item)
            if len(self.items) == self.k:
                self._w = math.exp(math.log(self._u()) / self.k)
                self._next = self.k - 1
                self._skip()
        elif i == self._next:
            self.items[self._rng.randrange(self.k)] = item
            self._w *= math.exp(math.log(self._u()) / self.k)
            self._skip()


def _mix64(x: int) -> int:
    """splitmix64 finalizer on a Python int (a line's selection draw from its document's hash)."""
    x &= _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _sentences_of_line(line: str, backend: str, max_chars: int, stats: dict) -> list[str]:
    """Sentences of one line: the regex splitter first (cheap), kiwi only for pieces still too long."""
    from corpus.split import _split_regex, split_sentences

    out = []
    for s in _split_regex(line):
        if len(s) > max_chars and backend == "kiwi":
            stats["kiwi_split"] += 1
            parts = split_sentences(s, "kiwi")
        else:
            parts = [s]
        for p in parts:
            if len(p) > max_chars:
                stats["sentences_too_long"] += 1
            else:
                out.append(p)
    return out


_COUNTER = None   # in pool workers: a shared count of documents done (progress between parts)


def _init_counter(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _count(n: int) -> None:
    if _COUNTER is not None:
        with _COUNTER.get_lock():
            _COUNTER.value += n


def _sample_part(job: tuple) -> dict:
    """Worker: one clean part -> its selected sentences (UTF-8, in document order), held-out texts, counts.

    A line of a training document is selected when splitmix64(blake2b(seed, doc key) + line index) is
    below p * 2^64, so which lines are selected depends only on the seed and the documents.
    """
    path, seed, shard_seed, fraction, p, backend, max_chars, report_docs = job
    stats = {"docs": 0, "heldout_docs": 0, "lines": 0, "lines_selected": 0, "sentences_too_long": 0,
             "kiwi_split": 0}
    sentences: list[bytes] = []
    heldout: list[str] = []
    threshold = int(p * 2.0 ** 64) if p < 1.0 else None
    for doc in iter_part(path):
        stats["docs"] += 1
        if not stats["docs"] % 1000:
            _count(1000)
        text = doc.get("text") or ""
        key = doc_key(doc)
        if is_valid_doc(key, shard_seed, fraction):
            stats["heldout_docs"] += 1
            if len(heldout) < report_docs:
                heldout.append(text)
            continue
        lines = text.split("\n")
        stats["lines"] += len(lines)
        if threshold is not None:
            h = int.from_bytes(hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8"), digest_size=8).digest(), "little")
            lines = [ln for i, ln in enumerate(lines) if _mix64(h + i) < threshold]
        for ln in lines:
            ln = ln.strip()
            if not ln:
                continue
            stats["lines_selected"] += 1
            sentences.extend(s.encode("utf-8") for s in _sentences_of_line(ln, backend, max_chars, stats))
    _count(stats["docs"] % 1000)
    return {"sentences": sentences, "heldout": heldout, "stats": stats}


def estimate_sentences(parts: list[Path], total_bytes: int, pilot_bytes: int = PILOT_BYTES) -> tuple[float, dict]:
    """Sentences in the corpus, estimated from the first `pilot_bytes` of text of every part (regex splitter).

    Returns (estimate, {"pilot_bytes", "pilot_sentences"}). Every part is one unit of the corpus
    stage, so the pilot covers every source and file.
    """
    from corpus.split import _split_regex

    n_bytes = n_sent = 0
    for path in parts:
        seen = 0
        for doc in iter_part(path):
            text = doc.get("text") or ""
            b = len(text.encode("utf-8"))
            seen += b
            n_bytes += b
            n_sent += sum(len(_split_regex(ln.strip())) for ln in text.split("\n") if ln.strip())
            if seen >= pilot_bytes:
                break
    est = total_bytes * n_sent / max(n_bytes, 1)
    return est, {"pilot_bytes": n_bytes, "pilot_sentences": n_sent}


def sample_sentences(cfg: Any, out_file: str | os.PathLike, workers: int = 1) -> dict:
    """Sample at most `tokenizer.sample_sentences` sentences of the training documents into `out_file`.

    1. p = min(1, OVERSHOOT * cap / estimated sentences) (estimate_sentences: a pilot over every part).
    2. Each part, in a worker process: held-out documents (the shards stage's validation split: same
       seed and fraction; with `shards.valid_fraction: 0`, 0.1%) are set aside; of the others, each
       line is selected with probability p (a seeded hash of document key and line index); only the
       selected lines are split (corpus/split.py's regex splitter; kiwi only for pieces longer than
       `max_sentence_chars`, which are otherwise dropped and counted).
    3. The parent feeds the selected sentences, part after part in manifest order, to a seeded
       reservoir (Algorithm L) of size cap: uniform, and the same for any worker count.
    Writes the sample to `out_file` (UTF-8, one sentence a line, in reservoir order). Returns stats and
    `heldout` (texts of up to `tokenizer.report_docs` held-out documents, for the report).
    Cost: reading and JSON-decoding the corpus once (parallel over parts), splitting ~p of its lines.
    """
    from common.progress import Progress

    t, clean = cfg.tokenizer, Path(cfg.corpus.out_dir)
    fraction = cfg.shards.valid_fraction or 0.001
    manifest = read_manifest(clean)
    parts = [clean / p["file"] for p in manifest["parts"]]
    total_bytes = manifest.get("bytes") or sum(p.get("bytes", 0) for p in manifest["parts"])
    total_docs = manifest.get("docs") or sum(p.get("docs", 0) for p in manifest["parts"])
    est, pilot = estimate_sentences(parts, total_bytes) if total_bytes else (0.0, {})
    p = min(1.0, OVERSHOOT * t.sample_sentences / est) if est else 1.0
    log.info("sampling: ~%s sentences estimated in %d parts (%.1f MB of text); selecting lines with p=%.4f "
             "for a cap of %s", f"{est:,.0f}", len(parts), total_bytes / 1e6, p, f"{t.sample_sentences:,}")
    res = Reservoir(t.sample_sentences, t.seed)
    heldout: list[str] = []
    stats = {"docs": 0, "heldout_docs": 0, "lines": 0, "lines_selected": 0, "sentences_too_long": 0,
             "kiwi_split": 0, "sentences_seen": 0, "sentences_estimated": int(est), "line_probability": p, **pilot}
    jobs = [(str(path), t.seed, cfg.shards.seed, fraction, p, cfg.corpus.sentence_splitter, t.max_sentence_chars,
             t.report_docs) for path in parts]
    bar = Progress("sampling sentences", total=total_docs or None, unit="docs", logger=log, heartbeat=True)

    def take(r: dict) -> None:
        for k, v in r["stats"].items():
            stats[k] += v
        stats["sentences_seen"] += len(r["sentences"])
        heldout.extend(r["heldout"][:t.report_docs - len(heldout)])
        for s in r["sentences"]:
            res.add(s)

    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                r = _sample_part(job)
                take(r)
                bar.update(r["stats"]["docs"])
        else:
            # parts run in worker processes; results are consumed in manifest order (imap), so the
            # sample does not depend on the worker count; a shared counter shows progress within parts
            import multiprocessing as mp
            ctx = mp.get_context("spawn")
            counter = ctx.Value("q", 0)
            with ctx.Pool(min(workers, len(jobs)), _init_counter, (counter,)) as pool:
                it = pool.imap(_sample_part, jobs)
                for _ in jobs:
                    while True:
                        try:
                            r = it.next(timeout=1.0)
                            break
                        except mp.TimeoutError:
                            bar.update(counter.value - bar.done)
                    take(r)
            bar.update(counter.value - bar.done)
    finally:
        bar.close()
    if not res.items:
        raise TokenizerError(f"no sentences found in {clean} ({stats['docs']} documents, "
                             f"{stats['heldout_docs']} held out): run `make corpus` first or check corpus.out_dir")
    if res.seen < t.sample_sentences and p < 1.0:
        log.warning("sampling: only %d sentences selected for a cap of %d (the pilot overestimated the corpus)",
                    res.seen, t.sample_sentences)
    with atomic_open(out_file, "wb") as f:
        for s in res.items:
            f.write(s + b"\n")
    stats["sentences_sampled"] = len(res.items)
    res.items = []
    stats["heldout"] = heldout
    return stats
