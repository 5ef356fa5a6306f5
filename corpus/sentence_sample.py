"""Sentences for tokenizer training: seeded, streaming, bounded.

`sample_sentences` streams the clean documents, splits them into sentences (kiwi, in worker
processes), holds out the validation-split documents and keeps a uniform sample of at most
`tokenizer.sample_sentences` sentences in a seeded reservoir (Li's Algorithm L), so a 20 GB corpus
is sampled in one pass with memory bounded by the cap, and the same corpus, config and seed give
the same sample whatever the worker count.
"""
from __future__ import annotations

import math
import os
import random
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from common.io import atomic_open, read_json
from corpus.docs import doc_key, is_valid_doc, iter_documents
from corpus.errors import TokenizerError


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


def _split_batch(args: tuple[list[str], str, int]) -> tuple[list[bytes], int]:
    """Worker: documents -> UTF-8 sentences of 1..max_chars chars (one line each), and the count of longer ones."""
    from corpus.split import split_sentences

    texts, backend, max_chars = args
    out, too_long = [], 0
    for text in texts:
        for s in split_sentences(text, backend):
            s = " ".join(s.split("\n")).strip()  # one sentence per line in the training file
            if not s:
                continue
            if len(s) > max_chars:
                too_long += 1
                continue
            out.append(s.encode("utf-8"))
    return out, too_long


def _batches(it: Iterator[str], n: int) -> Iterator[list[str]]:
    while batch := list(islice(it, n)):
        yield batch


def sample_sentences(cfg: Any, out_file: str | os.PathLike, workers: int = 1) -> dict:
    """Stream the clean documents, hold out the validation-split ones, reservoir-sample the rest's sentences.

    Writes the sample to `out_file` (UTF-8, one sentence a line, in reservoir order). Returns stats and
    `heldout` (texts of up to `tokenizer.report_docs` held-out documents, for the report).
    Held-out = the documents the shards stage puts in the validation split (same seed and fraction), so
    the tokenizer never trains on validation text; with `shards.valid_fraction: 0`, 0.1% of documents.
    """
    from tqdm import tqdm


    t, clean = cfg.tokenizer, Path(cfg.corpus.out_dir)
    fraction = cfg.shards.valid_fraction or 0.001
    res = Reservoir(t.sample_sentences, t.seed)
    heldout: list[str] = []
    stats = {"docs": 0, "heldout_docs": 0, "sentences_seen": 0, "sentences_too_long": 0}
    total = None
    if (clean / "manifest.json").is_file():
        total = sum(p.get("docs", 0) for p in read_json(clean / "manifest.json").get("parts", []))
    bar = tqdm(total=total, unit="doc", desc="sampling sentences", disable=None)

    def train_texts() -> Iterator[str]:
        for doc in iter_documents(clean):
            stats["docs"] += 1
            bar.update(1)
            text = doc.get("text") or ""
            if is_valid_doc(doc_key(doc), cfg.shards.seed, fraction):
                stats["heldout_docs"] += 1
                if len(heldout) < t.report_docs:
                    heldout.append(text)
                continue
            yield text

    def take(result: tuple[list[bytes], int]) -> None:
        sentences, too_long = result
        stats["sentences_too_long"] += too_long
        stats["sentences_seen"] += len(sentences)
        for s in sentences:
            res.add(s)

    jobs = ((b, cfg.corpus.sentence_splitter, t.max_sentence_chars) for b in _batches(train_texts(), 256))
    try:
        if workers <= 1:
            for job in jobs:
                take(_split_batch(job))
        else:
            # Splitting (kiwi) runs in worker processes; results are consumed in submission order, so the
            # sample does not depend on the worker count; at most 2 batches per worker are in flight.
            import multiprocessing as mp
            with mp.get_context("spawn").Pool(workers) as pool:
                pending: deque = deque()
                for job in jobs:
                    pending.append(pool.apply_async(_split_batch, (job,)))
                    if len(pending) >= 2 * workers:
                        take(pending.popleft().get())
                while pending:
                    take(pending.popleft().get())
    finally:
        bar.close()
    if not res.items:
        raise TokenizerError(f"no sentences found in {clean} ({stats['docs']} documents, "
                             f"{stats['heldout_docs']} held out): run `make corpus` first or check corpus.out_dir")
    with atomic_open(out_file, "wb") as f:
        for s in res.items:
            f.write(s + b"\n")
    stats["sentences_sampled"] = len(res.items)
    res.items = []
    stats["heldout"] = heldout
    return stats
