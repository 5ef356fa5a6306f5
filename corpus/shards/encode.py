"""Encoding clean parts into token files, in worker processes: the part reader, the word-cache encoder
and the per-part worker that writes `.parts/part-NNNNN.{train,valid}.{bin,idx}` and its `.done.json`."""
from __future__ import annotations

import io
import json
import logging
import os
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from common.io import write_json_atomic
from corpus.docs import doc_key, is_valid_doc
from corpus.shards.read import (
    DTYPE, IDX_DTYPE, SPLITS)
from corpus.shards.write import _BinWriter
from corpus.tokenizer import Tokenizer

_MAX_ERRORS = 100  # error records kept in the manifest (all are counted)

log = logging.getLogger("corpus.shards")


# ----------------------------------------------------------------------------------------------------
# Building from clean documents (worker processes)


def iter_part(path: str | os.PathLike) -> Iterator[tuple[int, Optional[dict], Optional[str]]]:
    """Yield (line number, document, None) or (line number, None, error) for one zstd JSONL clean part.

    A line that is not JSON, not a dict or has no string `text` is an error, not fatal; a damaged zstd
    stream ends the part with one error.
    """
    import zstandard as zstd

    lineno = 0
    with open(path, "rb") as fh:
        reader = io.BufferedReader(zstd.ZstdDecompressor().stream_reader(fh, read_across_frames=True),
                                   buffer_size=1 << 20)
        while True:
            try:
                line = reader.readline()
            except zstd.ZstdError as e:
                yield lineno + 1, None, f"zstd stream damaged, rest of part skipped: {e}"
                return
            if not line:
                return
            lineno += 1
            try:
                doc = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                yield lineno, None, f"not JSON: {e}"
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                yield lineno, None, "not an object with a string 'text'"
                continue
            yield lineno, doc, None


class WordCacheEncoder:
    """Batch encoder that reuses the ids of frequent space-separated words, when that is exact.

    With SentencePiece BPE, identity normalization, `remove_extra_whitespaces=false`, whitespace
    splitting and a dummy prefix, no piece spans a space, so encode(text) is the concatenation of
    encode(word) over text.split(" ") (an empty word, i.e. an extra space, is the lone "▁" piece),
    and every word's ids start with a piece that starts with "▁". Output always equals `sp.encode`.

    Korean text repeats its eojeol heavily, but a small corpus still has many new words, and a word
    looked up costs ~0.9 us against ~5.8 us for a new word encoded alone (2.2 us per word in context;
    2-core VM, 50k vocab). So each batch takes the cheaper road: when at least `min_hit_rate` of its
    words are cached, only the new words go to SentencePiece; otherwise the texts are encoded in
    context and the ids of a sample of them, cut at the "▁" pieces, teach the cache. It keeps the first
    `max_words` words it sees (the frequent ones come early) and then stops growing. For other
    models (e.g. nmt_nfkc, which can turn other characters into spaces) it is plain batch encoding.
    """

    def __init__(self, tok: Tokenizer, max_words: int = 1_000_000, min_hit_rate: float = 0.75) -> None:
        self.sp, self.max_words, self.min_hit_rate = tok.sp, max_words, min_hit_rate
        self.space = tok.piece_id("\u2581")
        self.cache: Optional[dict[str, list[int]]] = {} if self.exact_for(tok) else None
        if self.cache is not None:
            self._word_start = np.array([self.sp.id_to_piece(i).startswith("\u2581")
                                         for i in range(self.sp.get_piece_size())], dtype=bool)
        self.words = self.hits = 0   # words sampled and found cached, over all batches (for the log)

    @staticmethod
    def exact_for(tok: Tokenizer) -> bool:
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(tok.model_path.read_bytes())
        n, t = m.normalizer_spec, m.trainer_spec
        return (t.model_type == pb.TrainerSpec.BPE and n.name == "identity" and not n.remove_extra_whitespaces
                and n.add_dummy_prefix and n.escape_whitespaces and t.split_by_whitespace
                and not t.treat_whitespace_as_suffix and not t.pretokenization_delimiter
                and tok.piece_id("\u2581") is not None
                and not any(("\u2581" in p.piece or " " in p.piece) and p.type == p.USER_DEFINED for p in m.pieces))

    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        """Ids of each text, exactly `sp.encode(texts)`; `threads` SentencePiece threads."""
        cache = self.cache
        if cache is None:
            return self.sp.encode(texts, num_threads=threads)
        # The hit rate is estimated on every 8th text, and only those teach the cache: frequent words
        # are in any sample, and a full pass over a batch that is mostly new words costs ~25%.
        sample = texts[::8]
        sample_words = [t.split(" ") if t else [] for t in sample]
        n = sum(map(len, sample_words))
        hits = sum(1 for ws in sample_words for w in ws if w in cache)
        self.words, self.hits = self.words + n, self.hits + hits
        if hits < self.min_hit_rate * n:
            ids = self.sp.encode(texts, num_threads=threads)
            if len(cache) < self.max_words:
                self._learn(sample_words, ids[::8])
            return ids
        words = [t.split(" ") if t else [] for t in texts]  # "" encodes to []
        new = list(dict.fromkeys(w for ws in words for w in ws if w not in cache))
        room = self.max_words - len(cache)
        uncached = {}
        for k, (w, w_ids) in enumerate(zip(new, self.sp.encode(new, num_threads=threads))):
            (cache if k < room else uncached)[w] = w_ids if w else [self.space]
        out = []
        for ws in words:
            ids: list[int] = []
            for w in ws:
                ids.extend(cache[w] if w in cache else uncached[w])
            out.append(ids)
        return out

    def _learn(self, words: list[list[str]], ids: list[list[int]]) -> None:
        """Cache the words of texts encoded in context: their ids cut before each "▁" piece."""
        cache, room = self.cache, self.max_words - len(self.cache)
        for ws, row in zip(words, ids):
            if room <= 0:
                return
            cuts = np.flatnonzero(self._word_start[np.asarray(row, dtype=np.int64)]).tolist()
            if len(cuts) != len(ws):      # not expected for an exact model; learn nothing from it
                continue
            cuts.append(len(row))
            for k, w in enumerate(ws):
                if w not in cache:
                    cache[w] = row[cuts[k]:cuts[k + 1]]
                    room -= 1


_W: dict = {}  # per worker process: the tokenizer and the shared progress counter


def _init_worker(tok_path: str, counter: Any) -> None:
    _W["tok"], _W["counter"] = Tokenizer.load(tok_path), counter
    _W["encoder"] = WordCacheEncoder(_W["tok"])


def _encode_part(task: dict) -> dict:
    """Worker: encode one clean part into `<stem>.{train,valid}.{bin,idx}`, then write `<stem>.done.json`."""
    tok, counter = _W["tok"], _W["counter"]
    stem, bos, eos = Path(task["stem"]), tok.bos_id, tok.eos_id
    writers = {s: _BinWriter(stem.with_name(f"{stem.name}.{s}")) for s in SPLITS}
    counts = {"docs_in": 0, "bad_docs": 0, "empty_docs": 0}
    errors: list[dict] = []
    texts: list[str] = []
    splits: list[str] = []

    def flush() -> None:
        ids = _W["encoder"].encode(texts, task["threads"])
        for s in SPLITS:
            rows = [r for r, sp in zip(ids, splits) if sp == s]
            if rows:
                lens = np.fromiter((len(r) + 2 for r in rows), IDX_DTYPE, len(rows))
                # every document is <s> ids </s>: the input KoGPT2-style code and pretrain.generate give
                # the model starts with <s> (docs/CONTRACTS.md "One convention")
                flat = np.fromiter(chain.from_iterable(chain((bos,), r, (eos,)) for r in rows), DTYPE,
                                   int(lens.sum()))
                writers[s].write(flat, np.cumsum(lens))
        with counter.get_lock():
            counter.value += len(texts)
        texts.clear()
        splits.clear()

    try:
        chars = 0
        for lineno, doc, err in iter_part(task["path"]):
            counts["docs_in"] += 1
            if err is not None:
                counts["bad_docs"] += 1
                if len(errors) < _MAX_ERRORS:
                    errors.append({"file": task["file"], "line": lineno, "error": err[:300]})
                continue
            if not doc["text"]:
                counts["empty_docs"] += 1
                continue
            texts.append(doc["text"])
            splits.append("valid" if is_valid_doc(doc_key(doc), task["seed"], task["valid_fraction"]) else "train")
            chars += len(doc["text"])
            if chars >= task["batch_chars"]:
                flush()
                chars = 0
        if texts:
            flush()
        files = {s: w.close() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    done = {"key": task["key"], "counts": counts, "errors": errors, "files": files}
    write_json_atomic(stem.with_name(stem.name + ".done.json"), done)
    return done
