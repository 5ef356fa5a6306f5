"""The corpus stage: raw inputs -> clean, deduplicated document parts + manifest.json.

    run_clean(cfg, workers=None, fresh=False) -> manifest dict

Work is split into units (`plan_units`, corpus/plan.py): a byte range of an uncompressed text/JSONL file, several
small files packed together, or one k-th share of a compressed file / wiki dump. The plan is saved
in `<out_dir>/.progress/plan.json` and reused by a rerun with the same inputs and config (the
number of workers may change).

Processes: `workers` processes read, clean, filter and hash their units, sending batches of
documents (JSONL bytes + dedup keys, ~2 MB) to the parent. The parent holds the corpus-wide dedup
index (corpus/dedup.py), decides which documents are duplicates, and writes each unit's surviving
documents to its own zstd part(s) under `.progress/`. A unit is finished when its parts are renamed
into place, its dedup keys saved (`unit-N.keys.npz`) and its record `unit-N.json` written, in that
order; a rerun loads the keys of finished units into the index and skips them. At the end the parts
are renamed to `part-00000.jsonl.zst`... in unit order and `manifest.json` is written last.

Memory: workers hold one batch and the reader's block; the parent holds one zstd stream per unit in
progress, a bounded queue of batches, and the dedup index (grows with the number of documents).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from common.config import ConfigError, save_resolved, to_dict
from common.io import read_json, write_json_atomic
from common.schema import Config, CorpusConfig
from corpus.clean import FILTERS, MODIFIERS, Cleaner
from corpus.dedup import DedupHasher, DedupIndex
from corpus.docs import FORMAT, MANIFEST, PartWriter, encode_doc
from corpus.plan import expand_inputs, fingerprint, plan_units
from corpus.readers import ErrorLog, Segment, read_segment

log = logging.getLogger("corpus")

PROGRESS = ".progress"
BATCH_CHARS = 2_000_000     # characters of raw text per batch sent to the parent
BATCH_DOCS = 8192


# ----------------------------------------------------------------------------------------------------
# worker side


class _UnitState:
    __slots__ = ("progress",)

    def __init__(self) -> None:
        self.progress = 0


def process_unit(unit: dict, cc: CorpusConfig, cleaner: Cleaner, hasher: DedupHasher) -> Iterator[tuple]:
    """Read, clean, filter and hash one unit. Yields ("batch", unit_id, payload) messages and finally
    ("done", unit_id, {"errors", "error_counts", "skipped"})."""
    uid = unit["id"]
    errors = ErrorLog()
    skipped: dict = {}
    st = _UnitState()
    max_line = max(1 << 20, 8 * cc.filters.max_chars)

    def progress(n: int) -> None:
        st.progress += n

    for sd in unit["segments"]:
        seg = Segment.from_dict(sd)
        texts: list[str] = []
        ids: list[str] = []
        chars = 0
        try:
            for text, doc_id in read_segment(seg, errors, progress, max_line, skipped):
                texts.append(text)
                ids.append(doc_id)
                chars += len(text)
                if chars >= BATCH_CHARS or len(texts) >= BATCH_DOCS:
                    yield "batch", uid, _batch(texts, ids, seg.source, cleaner, hasher, st)
                    texts, ids, chars = [], [], 0
        except Exception as e:  # a reader bug must not lose the rest of the corpus: record and go on
            log.exception("unexpected error reading %s", seg.path)
            errors.add(os.path.basename(seg.path), "internal", f"{type(e).__name__}: {e}; rest of the segment skipped")
        if texts or st.progress:
            yield "batch", uid, _batch(texts, ids, seg.source, cleaner, hasher, st)
    entries, counts = errors.take()
    yield "done", uid, {"errors": entries, "error_counts": counts, "skipped": skipped}


def _batch(texts: list[str], ids: list[str], source: str, cleaner: Cleaner, hasher: DedupHasher,
           st: _UnitState) -> dict:
    """Clean + filter + hash one batch; the payload sent to the parent."""
    bytes_in = len("".join(texts).encode("utf-8"))
    cleaned, keep, stats, counts = cleaner.clean_batch(texts)
    kept = np.flatnonzero(keep)
    kt = [cleaned[i] for i in kept]
    exact, near_rows, near_keys = hasher.hash_batch(kt)
    lines = [encode_doc(cleaned[i], source, ids[i]) + "\n" for i in kept]
    blob = "".join(lines).encode("utf-8")
    # byte length of each JSONL line: one pass over the blob's newlines
    ends = np.flatnonzero(np.frombuffer(blob, np.uint8) == 10) + 1 if blob else np.zeros(0, np.int64)
    payload = {"source": source, "blob": blob, "ends": ends.astype(np.int64), "text_bytes": stats.bytes[kept],
               "exact": exact, "near_rows": near_rows, "near_keys": near_keys, "docs_in": len(texts),
               "bytes_in": bytes_in, "counts": counts, "progress": st.progress}
    st.progress = 0
    return payload


def _worker_main(cc_dict: dict, tasks, results) -> None:
    from common.config import build

    cc = build(CorpusConfig, cc_dict)
    cleaner, hasher = Cleaner(cc.filters), DedupHasher(cc.dedup)
    while True:
        unit = tasks.get()
        if unit is None:
            return
        results.put(("start", unit["id"], os.getpid()))
        for msg in process_unit(unit, cc, cleaner, hasher):
            results.put(msg)


# ----------------------------------------------------------------------------------------------------
# parent side


def _add(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict):
            _add(dst.setdefault(k, {}), v)
        else:
            dst[k] = dst.get(k, 0) + v


class _Unit:
    """Parent-side state of a unit in progress."""

    def __init__(self, uid: int, prog_dir: Path, part_bytes: int):
        self.id = uid
        self.writer = PartWriter(prog_dir, f"unit-{uid:05d}", part_bytes)
        self.sources: dict = {}
        self.filters: dict = {}
        self.dedup = {"exact": {"docs": 0, "bytes": 0}, "near": {"docs": 0, "bytes": 0}}
        self.keys_exact: list[np.ndarray] = []
        self.keys_near: list[np.ndarray] = []
        self.t0 = time.time()


class Stage:
    def __init__(self, cfg: Config, workers: int):
        self.cfg, self.cc = cfg, cfg.corpus
        self.workers = workers
        self.out = Path(self.cc.out_dir)
        self.prog = self.out / PROGRESS
        self.index = DedupIndex(self.cc.dedup)
        self.active: dict[int, _Unit] = {}
        self.records: dict[int, dict] = {}

    # -- one batch ------------------------------------------------------------------------------------
    def on_batch(self, uid: int, p: dict, bar) -> None:
        u = self.active[uid]
        ex_dup, near_dup, ex_add, nk_add = self.index.decide(p["exact"], p["near_rows"], p["near_keys"])
        u.keys_exact.append(ex_add)
        u.keys_near.append(nk_add)
        tb = p["text_bytes"]
        u.dedup["exact"]["docs"] += int(ex_dup.sum())
        u.dedup["exact"]["bytes"] += int(tb[ex_dup].sum())
        u.dedup["near"]["docs"] += int(near_dup.sum())
        u.dedup["near"]["bytes"] += int(tb[near_dup].sum())
        keep = ~(ex_dup | near_dup)
        blob = p["blob"]
        if not keep.all():
            lengths = np.diff(np.concatenate([[0], p["ends"]]))
            blob = np.frombuffer(blob, np.uint8)[np.repeat(keep, lengths)].tobytes()
        n_out, b_out = int(keep.sum()), int(tb[keep].sum())
        u.writer.write_lines(blob, n_out, b_out)
        _add(u.sources, {p["source"]: {"docs_in": p["docs_in"], "bytes_in": p["bytes_in"],
                                       "docs_out": n_out, "bytes_out": b_out}})
        _add(u.filters, p["counts"])
        if bar is not None:
            bar.update(p["progress"])

    def on_done(self, uid: int, info: dict) -> None:
        u = self.active.pop(uid)
        parts = u.writer.close()
        keys = f"unit-{uid:05d}.keys.npz"
        with open(self.prog / (keys + ".tmp"), "wb") as f:
            np.savez(f, exact=np.concatenate(u.keys_exact or [np.zeros(0, np.uint64)]),
                     near=np.concatenate(u.keys_near or [np.zeros(0, np.uint64)]))
        os.replace(self.prog / (keys + ".tmp"), self.prog / keys)
        _add(u.filters, info["skipped"])
        rec = {"unit": uid, "parts": parts, "sources": u.sources, "filters": u.filters, "dedup": u.dedup,
               "errors": info["errors"], "error_counts": info["error_counts"], "keys": keys,
               "seconds": round(time.time() - u.t0, 3)}
        for e in info["errors"]:
            where = f" line {e['line']}" if "line" in e else (f" offset {e['offset']}" if "offset" in e else "")
            log.warning("bad input: %s%s: %s", e["file"], where, e["error"])
        write_json_atomic(self.prog / f"unit-{uid:05d}.json", rec)
        self.records[uid] = rec

    # -- the run --------------------------------------------------------------------------------------
    def run(self, units: list[dict], total_bytes: int) -> None:
        pending = [u for u in units if u["id"] not in self.records]
        from tqdm import tqdm

        done_bytes = sum(u["bytes"] for u in units if u["id"] in self.records)
        tqdm.monitor_interval = 0   # no monitor thread: worker processes are forked after this
        bar = tqdm(total=total_bytes, initial=done_bytes, unit="B", unit_scale=True, desc="clean",
                   mininterval=0.5, smoothing=0.1)
        try:
            if self.workers <= 1 or len(pending) <= 1:
                self._run_serial(pending, bar)
            else:
                self._run_parallel(pending, bar)
        finally:
            bar.close()

    def _run_serial(self, pending: list[dict], bar) -> None:
        cleaner, hasher = Cleaner(self.cc.filters), DedupHasher(self.cc.dedup)
        for unit in pending:
            self.active[unit["id"]] = _Unit(unit["id"], self.prog, self.cc.part_size_mb << 20)
            for kind, uid, payload in process_unit(unit, self.cc, cleaner, hasher):
                self.on_batch(uid, payload, bar) if kind == "batch" else self.on_done(uid, payload)

    def _run_parallel(self, pending: list[dict], bar) -> None:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
        n = min(self.workers, len(pending))
        tasks, results = ctx.Queue(), ctx.Queue(maxsize=4 * n)
        for u in pending:
            tasks.put(u)
        for _ in range(n):
            tasks.put(None)
        cc_dict = to_dict(self.cc)
        procs = {}

        def spawn() -> None:
            p = ctx.Process(target=_worker_main, args=(cc_dict, tasks, results), daemon=True)
            p.start()
            procs[p.pid] = p

        for _ in range(n):
            spawn()
        owner: dict[int, int] = {}   # unit id -> worker pid
        remaining = {u["id"] for u in pending}
        try:
            while remaining:
                try:
                    kind, uid, payload = results.get(timeout=2.0)
                except queue.Empty:
                    self._check_workers(procs, owner, remaining, spawn)
                    continue
                if kind == "start":
                    owner[uid] = payload
                    self.active[uid] = _Unit(uid, self.prog, self.cc.part_size_mb << 20)
                elif kind == "batch":
                    self.on_batch(uid, payload, bar)
                else:
                    self.on_done(uid, payload)
                    remaining.discard(uid)
                    owner.pop(uid, None)
        finally:
            for p in procs.values():
                p.join(timeout=5 if not remaining else 0.1)
                if p.is_alive():
                    p.terminate()

    def _check_workers(self, procs: dict, owner: dict, remaining: set, spawn: Callable) -> None:
        """A worker that died (killed, crashed in C code) loses its unit: record it, start a new worker."""
        for pid, p in list(procs.items()):
            if p.exitcode is None or p.exitcode == 0:
                continue
            del procs[pid]
            for uid, opid in list(owner.items()):
                if opid == pid:
                    log.error("worker %d died (exit code %s) in unit %d; its output is dropped", pid, p.exitcode, uid)
                    u = self.active.get(uid)
                    if u is not None:
                        u.writer.abort()
                        u.keys_exact, u.keys_near = [], []
                    self.on_done(uid, {"errors": [{"file": f"unit {uid}", "kind": "worker_died",
                                                   "error": f"worker exit code {p.exitcode}; unit dropped"}],
                                       "error_counts": {"worker_died": 1}, "skipped": {}})
                    remaining.discard(uid)
                    owner.pop(uid)
            if remaining:
                spawn()


# ----------------------------------------------------------------------------------------------------
# resume, finalize, manifest


def _load_progress(stage: Stage, fp: str, units: list[dict], fresh: bool) -> list[dict]:
    """Reuse the saved plan and finished units of an earlier run with the same fingerprint."""
    prog = stage.prog
    plan_path = prog / "plan.json"
    if fresh and stage.out.exists():
        for p in list(stage.out.glob("part-*.jsonl.zst")) + [stage.out / MANIFEST]:
            p.unlink(missing_ok=True)
        shutil.rmtree(prog, ignore_errors=True)
    prog.mkdir(parents=True, exist_ok=True)
    if plan_path.is_file():
        plan = read_json(plan_path)
        if plan["fingerprint"] != fp:
            if any(prog.glob("unit-*.json")):
                raise ConfigError(f"{stage.out} holds a corpus run with other inputs or settings "
                                  "(corpus.* config or input files changed). Rerun with --fresh to discard it, "
                                  "or set corpus.out_dir to a new directory.")
        else:
            units = plan["units"]
    write_json_atomic(plan_path, {"fingerprint": fp, "units": units})
    referenced = set()
    for rp in sorted(prog.glob("unit-*.json")):
        rec = read_json(rp)
        ok = all((prog / p["file"]).is_file() or (stage.out / p.get("final", "-")).is_file()
                 for p in rec["parts"]) and (prog / rec["keys"]).is_file()
        if not ok:
            log.warning("%s: parts missing, redoing unit %d", rp, rec["unit"])
            rp.unlink()
            continue
        stage.records[rec["unit"]] = rec
        referenced.update(p["file"] for p in rec["parts"])
        with np.load(prog / rec["keys"]) as z:
            stage.index.load(z["exact"], z["near"])
    for p in prog.iterdir():  # parts of a unit killed midway, temp files
        if p.name.endswith(".tmp") or (p.name.endswith(".jsonl.zst") and p.name not in referenced):
            p.unlink()
    if stage.records:
        log.info("resuming: %d of %d units already finished", len(stage.records), len(units))
    return units


def _finalize(stage: Stage, units: list[dict], init_errors: ErrorLog, seconds: float) -> dict:
    """Rename parts into place (idempotent) and write manifest.json last."""
    parts, sources, filters = [], {}, {k: {"docs": 0, "bytes": 0} for k in MODIFIERS}
    for name, _ in FILTERS:
        filters[name] = {"docs": 0, "bytes": 0}
    dedup = {"exact": {"docs": 0, "bytes": 0}, "near": {"docs": 0, "bytes": 0}}
    ent, counts = init_errors.take()
    errors, error_counts = list(ent), dict(counts)
    for u in units:
        rec = stage.records[u["id"]]
        if any(p.get("final") != f"part-{len(parts) + i:05d}.jsonl.zst" for i, p in enumerate(rec["parts"])):
            for i, p in enumerate(rec["parts"]):   # record the final names before renaming (idempotent)
                p["final"] = f"part-{len(parts) + i:05d}.jsonl.zst"
            write_json_atomic(stage.prog / f"unit-{u['id']:05d}.json", rec)
        for p in rec["parts"]:
            final = p["final"]
            src = stage.prog / p["file"]
            if src.is_file():
                os.replace(src, stage.out / final)
            parts.append({"file": final, "docs": p["docs"], "bytes": p["bytes"], "size": p["size"],
                          "sha256": p["sha256"]})
        _add(sources, rec["sources"])
        _add(filters, rec["filters"])
        _add(dedup, rec["dedup"])
        errors.extend(rec["errors"])
        _add(error_counts, rec["error_counts"])
    for src in sources.values():
        for k in ("docs_in", "bytes_in", "docs_out", "bytes_out"):
            src.setdefault(k, 0)
    from corpus.dedup import lsh_params

    d = stage.cc.dedup
    bands, rows = lsh_params(d.threshold, d.num_perm)
    dedup.update({"method": "exact: 64-bit content hash; near: MinHash LSH, a shared band = duplicate",
                  "num_perm": d.num_perm,
                  "bands": bands, "rows": rows, "threshold": d.threshold, "shingle_chars": d.shingle_chars,
                  "min_chars": d.min_chars, **stage.index.stats()})
    manifest = {"format": FORMAT, "parts": parts, "docs": sum(p["docs"] for p in parts),
                "bytes": sum(p["bytes"] for p in parts), "sources": sources, "filters": filters, "dedup": dedup,
                "errors": errors, "error_counts": error_counts, "config": to_dict(stage.cc),
                "units": len(units), "seconds": round(seconds, 3)}
    write_json_atomic(stage.out / MANIFEST, manifest)
    return manifest


def summary_table(m: dict) -> str:
    """Human-readable per-source / per-filter / dedup / error table of a manifest."""
    mb = lambda b: f"{b / 1e6:10.2f}"  # noqa: E731
    rows = [f"{'source':<24}{'docs in':>12}{'MB in':>10}{'docs out':>12}{'MB out':>10}"]
    for name, s in m["sources"].items():
        rows.append(f"{name:<24}{s['docs_in']:>12}{mb(s['bytes_in'])}{s['docs_out']:>12}{mb(s['bytes_out'])}")
    rows.append(f"{'filter / step':<24}{'docs':>12}{'MB':>10}")
    for name, s in list(m["filters"].items()) + [("dedup_exact", m["dedup"]["exact"]),
                                                 ("dedup_near", m["dedup"]["near"])]:
        rows.append(f"{name:<24}{s['docs']:>12}{mb(s['bytes'])}")
    rows.append(f"{'output':<24}{m['docs']:>12}{mb(m['bytes'])}   in {len(m['parts'])} parts")
    if m["error_counts"]:
        rows.append("bad input: " + ", ".join(f"{k}={v}" for k, v in sorted(m["error_counts"].items()))
                    + "  (details: manifest.json 'errors')")
    return "\n".join(rows)


def run_clean(cfg: Config, workers: Optional[int] = None, fresh: bool = False) -> dict:
    """Run (or resume, or skip if finished) the corpus stage; returns the manifest."""
    cc = cfg.corpus
    if not cc.inputs:
        raise ConfigError("corpus.inputs is empty: list the input files, e.g. "
                          "inputs: [{path: data/kowiki-latest-pages-articles.xml.bz2, format: wiki}]")
    n_workers = workers if workers is not None else cc.workers
    n_workers = n_workers or os.cpu_count() or 1
    t0 = time.time()
    out = Path(cc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    init_errors = ErrorLog()
    files = expand_inputs(cc, init_errors)
    for e in init_errors.entries:
        log.warning("bad input: %s: %s", e["file"], e["error"])
    fp = fingerprint(cc, files)
    stage = Stage(cfg, n_workers)
    mpath = out / MANIFEST
    if not fresh and mpath.is_file() and (stage.prog / "plan.json").is_file() \
            and read_json(stage.prog / "plan.json")["fingerprint"] == fp:
        m = read_json(mpath)
        log.info("%s is complete for this config and inputs; nothing to do (--fresh to redo)", mpath)
        log.info("summary\n%s", summary_table(m))
        return m
    if mpath.is_file():
        mpath.unlink()   # the output is about to change: an old manifest must not describe it
    units = plan_units(files, n_workers)
    units = _load_progress(stage, fp, units, fresh)
    save_resolved(cfg, out / "config.yaml")
    total = sum(u["bytes"] for u in units)
    log.info("corpus: %d files, %.1f MB in %d units, %d workers -> %s", len(files), total / 1e6, len(units),
             n_workers, out)
    stage.run(units, total)
    dt = time.time() - t0
    m = _finalize(stage, units, init_errors, dt)
    log.info("summary (%.1f s, %.2f MB/s)\n%s", dt, total / 1e6 / max(dt, 1e-9), summary_table(m))
    return m
