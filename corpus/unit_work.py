"""The work on one unit of the clean stage, in a worker process (or in-process with one worker).

    clean_unit(unit, cc, cleaner, hasher, prog, progress) -> pass-1 record
    finish_unit(rec1, keep, prog, part_bytes) -> final parts

Pass 1 reads, cleans, filters and hashes a unit and writes its kept documents and dedup keys; pass 2,
after the coordinator's corpus-wide dedup decision (corpus/pipeline.py), writes the unit's final
parts without its duplicates. `_worker_main` is the worker process's loop over both kinds of task.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import zstandard

from common.io import write_json_atomic
from common.schema import CorpusConfig
from corpus.clean import Cleaner
from corpus.dedup import DedupHasher
from corpus.docs import PartWriter, encode_doc
from corpus.readers import ErrorLog, Segment, read_segment

log = logging.getLogger("corpus")

BATCH_CHARS = 2_000_000     # characters of raw text per batch sent to the parent
BATCH_DOCS = 8192
STAGE1 = "stage1"           # .progress/stage1/: each unit's pass-1 documents (before dedup) and record
FINISH_PIECE = 2 << 20      # pass 2 writes a unit's documents in pieces of about this many bytes


def _add(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict):
            _add(dst.setdefault(k, {}), v)
        else:
            dst[k] = dst.get(k, 0) + v


# ----------------------------------------------------------------------------------------------------
# worker side. Pass 1: read, clean, filter and hash a unit; write its kept documents and its keys.
# Pass 2 (after the coordinator's dedup decision): write the unit's final parts without duplicates.


def _save_npz(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def clean_unit(unit: dict, cc: CorpusConfig, cleaner: Cleaner, hasher: DedupHasher, prog: Path,
               progress: Callable[[int], None]) -> dict:
    """Pass 1 of a unit; returns its pass-1 record (also saved, last, as .progress/stage1/unit-N.json).

    Writes .progress/stage1/unit-N.jsonl.zst (every document the filters keep, zstd level 1) and
    .progress/unit-N.keys.npz: per kept document its exact hash, text bytes and source index, and
    the near-checked documents' LSH band keys — all the coordinator needs to decide duplicates.
    progress(n) gets on-disk bytes read (about once per ~2 MB batch).
    """
    uid = unit["id"]
    t0 = time.time()
    errors = ErrorLog()
    skipped: dict = {}
    metas: dict = {}   # doc id -> the reader's metadata (title, date...), emptied per batch
    max_line = max(1 << 20, 8 * cc.filters.max_chars)
    s1 = prog / STAGE1
    names: list[str] = []
    sources: dict = {}
    filters: dict = {}
    keys: dict = {k: [] for k in ("exact", "near_rows", "near_keys", "text_bytes", "source")}
    n_docs = 0
    read = [0]
    tmp = s1 / f".unit-{uid:05d}.jsonl.zst.tmp"
    with open(tmp, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False) as zw:
        def batch(texts: list[str], ids: list[str], source: str) -> None:
            nonlocal n_docs
            if source not in names:
                names.append(source)
            bytes_in = len("".join(texts).encode("utf-8"))
            cleaned, keep, stats, counts = cleaner.clean_batch(texts)
            kept = np.flatnonzero(keep)
            exact, near_rows, near_keys = hasher.hash_batch([cleaned[i] for i in kept])
            zw.write("".join([encode_doc(cleaned[i], source, ids[i], metas.get(ids[i])) + "\n"
                              for i in kept]).encode("utf-8"))
            metas.clear()
            for k, v in (("exact", exact), ("near_rows", near_rows + n_docs), ("near_keys", near_keys),
                         ("text_bytes", stats.bytes[kept].astype(np.int64)),
                         ("source", np.full(len(kept), names.index(source), np.int32))):
                keys[k].append(v)
            n_docs += len(kept)
            _add(sources, {source: {"docs_in": len(texts), "bytes_in": bytes_in}})
            _add(filters, counts)
            progress(read[0])
            read[0] = 0

        for sd in unit["segments"]:
            seg = Segment.from_dict(sd)
            texts: list[str] = []
            ids: list[str] = []
            chars = 0
            try:
                for text, doc_id in read_segment(seg, errors, lambda n: read.__setitem__(0, read[0] + n),
                                                 max_line, skipped, metas):
                    texts.append(text)
                    ids.append(doc_id)
                    chars += len(text)
                    if chars >= BATCH_CHARS or len(texts) >= BATCH_DOCS:
                        batch(texts, ids, seg.source)
                        texts, ids, chars = [], [], 0
            except Exception as e:  # a reader bug must not lose the rest of the corpus: record and go on
                log.exception("unexpected error reading %s", seg.path)
                errors.add(os.path.basename(seg.path), "internal", f"{type(e).__name__}: {e}; rest of the segment skipped")
            if texts or read[0]:
                batch(texts, ids, seg.source)
    os.replace(tmp, s1 / f"unit-{uid:05d}.jsonl.zst")
    bands = hasher.bands
    cat = lambda k, empty: np.concatenate(keys[k]) if keys[k] else empty  # noqa: E731
    _save_npz(prog / f"unit-{uid:05d}.keys.npz", {
        "exact": cat("exact", np.zeros(0, np.uint64)), "near_rows": cat("near_rows", np.zeros(0, np.int64)),
        "near_keys": cat("near_keys", np.zeros((0, bands), np.uint64)),
        "text_bytes": cat("text_bytes", np.zeros(0, np.int64)), "source": cat("source", np.zeros(0, np.int32))})
    _add(filters, skipped)
    entries, counts = errors.take()
    rec = {"unit": uid, "file": f"{STAGE1}/unit-{uid:05d}.jsonl.zst", "keys": f"unit-{uid:05d}.keys.npz",
           "docs": n_docs, "source_names": names, "sources": sources, "filters": filters, "errors": entries,
           "error_counts": counts, "seconds": round(time.time() - t0, 3)}
    write_json_atomic(s1 / f"unit-{uid:05d}.json", rec)
    return rec


def finish_unit(rec1: dict, keep: np.ndarray, prog: Path, part_bytes: int) -> list[dict]:
    """Pass 2 of a unit: its pass-1 documents where `keep` (n,) bool, into final zstd parts.

    Returns the parts ([{"file", "docs", "bytes", "size", "sha256"}], .progress/unit-N-MMM.jsonl.zst).
    The documents are written in ~2 MB pieces cut at fixed document counts, so the bytes depend only
    on the unit's content and `keep`. Memory: the unit's pass-1 text (<= ~2x MAX_UNIT).
    """
    uid = rec1["unit"]
    writer = PartWriter(prog, f"unit-{uid:05d}", part_bytes)
    with open(prog / rec1["file"], "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    with np.load(prog / rec1["keys"]) as z:
        tb = z["text_bytes"]
    arr = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(arr == 10) + 1
    assert len(ends) == len(keep) == len(tb), (uid, len(ends), len(keep), len(tb))
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    lo = 0
    while lo < len(ends):
        hi = lo + 1 + int(np.searchsorted(ends[lo:], starts[lo] + FINISH_PIECE))
        hi = min(hi, len(ends))
        k = keep[lo:hi]
        piece = arr[starts[lo]:ends[hi - 1]]
        if not k.all():
            piece = piece[np.repeat(k, ends[lo:hi] - starts[lo:hi])]
        writer.write_lines(piece.tobytes(), int(k.sum()), int(tb[lo:hi][k].sum()))
        lo = hi
    try:
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def _worker_main(cc_dict: dict, prog: str, tasks, results) -> None:
    from common.config import build

    cc = build(CorpusConfig, cc_dict)
    cleaner, hasher = Cleaner(cc.filters), DedupHasher(cc.dedup)
    prog_dir = Path(prog)
    while True:
        task = tasks.get()
        if task is None:
            return
        kind, uid, payload = task
        results.put(("start", uid, os.getpid()))
        if kind == "clean":
            rec = clean_unit(payload, cc, cleaner, hasher, prog_dir, lambda n: results.put(("progress", uid, n)))
            results.put(("stage1", uid, rec))
        else:
            rec1, packed, n = payload
            keep = np.unpackbits(np.frombuffer(packed, np.uint8), count=n).astype(bool)
            results.put(("done", uid, {"parts": finish_unit(rec1, keep, prog_dir, cc.part_size_mb << 20)}))
