"""The corpus stage: raw inputs -> clean, deduplicated document parts + manifest.json.

    run_clean(cfg, workers=None, fresh=False) -> manifest dict

Work is split into units (`plan_units`, corpus/plan.py): a byte range of an uncompressed text/JSONL file, several
small files packed together, or one k-th share of a compressed file / wiki dump. The plan is saved
in `<out_dir>/.progress/plan.json` and reused by a rerun with the same inputs and config (the
number of workers may change).

Processes, in two passes (the plan, and so the output, does not depend on the number of workers):
1. `workers` processes each take a unit, read, clean, filter and hash it, and write the documents
   the filters keep to `.progress/stage1/unit-N.jsonl.zst`, their dedup keys (exact hash, LSH band
   keys, text bytes) to `.progress/unit-N.keys.npz` and the unit's record `stage1/unit-N.json`, in
   that order. The coordinator receives only that record and progress counts: no text.
2. When every unit is hashed, the coordinator decides the duplicates of the whole corpus at once,
   in plan order (corpus/dedup.py `plan_order_duplicates`: sorting keys, O(documents)), so the
   result never depends on which worker finished first. The workers then write each unit's
   documents minus its duplicates to its final zstd part(s) under `.progress/`; the coordinator
   writes the unit's final record `unit-N.json` and deletes its pass-1 documents.
A rerun reuses every finished pass-1 unit and final unit (the decision is recomputed from the key
files: it is cheap and deterministic). At the end the parts are renamed to `part-00000.jsonl.zst`...
in unit order and `manifest.json` is written last.

Memory: a worker holds one batch and the reader's block (pass 1) or one unit's text (pass 2); the
coordinator holds every document's keys during the decision (~8 + 8 * bands bytes per document and
~3x that while sorting: grows with documents, not bytes). Disk: pass-1 documents (zstd level 1)
exist beside the final parts until each unit is finished.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np

from common.config import ConfigError, save_resolved, to_dict
from common.io import read_json, write_json_atomic
from common.schema import Config
from common.progress import Progress
from corpus.clean import FILTERS, MODIFIERS, Cleaner
from corpus.dedup import DedupHasher, plan_order_duplicates
from corpus.docs import FORMAT, MANIFEST, PartWriter  # noqa: F401  (PartWriter: the pass-2 writer, patched by tests)
from corpus.plan import expand_inputs, fingerprint, plan_units
from corpus.readers import ErrorLog, license_notes
from corpus.unit_work import STAGE1, _add, _save_npz, _worker_main, clean_unit, finish_unit

log = logging.getLogger("corpus")

PROGRESS = ".progress"


# ----------------------------------------------------------------------------------------------------
# coordinator: per unit it receives a record and a keys file, never the text (its work grows with
# the number of units and, in the dedup decision, documents; not with bytes)


class Stage:
    def __init__(self, cfg: Config, workers: int):
        self.cfg, self.cc = cfg, cfg.corpus
        self.workers = workers
        self.out = Path(self.cc.out_dir)
        self.prog = self.out / PROGRESS
        self.stage1: dict[int, dict] = {}     # unit id -> pass-1 record
        self.records: dict[int, dict] = {}    # unit id -> final record (parts written)
        self.decisions: dict[int, tuple] = {}
        self.dedup_stats: dict = {}

    # -- events ---------------------------------------------------------------------------------------
    def on_stage1(self, uid: int, rec: dict) -> None:
        for e in rec["errors"]:
            where = f" line {e['line']}" if "line" in e else (f" offset {e['offset']}" if "offset" in e else "")
            log.warning("bad input: %s%s: %s", e["file"], where, e["error"])
        self.stage1[uid] = rec

    def on_done(self, uid: int, info: dict) -> None:
        """A unit's final parts are written: save its final record, drop its pass-1 documents."""
        rec1 = self.stage1[uid]
        keep, dedup, out = self.decisions[uid]
        sources = {s: dict(v) for s, v in rec1["sources"].items()}
        for s, v in out.items():
            _add(sources, {s: v if not info.get("lost") else {"docs_out": 0, "bytes_out": 0}})
        rec = {"unit": uid, "parts": info["parts"], "sources": sources, "filters": rec1["filters"],
               "dedup": dedup, "errors": rec1["errors"] + info.get("errors", []),
               "error_counts": dict(rec1["error_counts"]), "keys": rec1["keys"], "seconds": rec1["seconds"]}
        _add(rec["error_counts"], info.get("error_counts", {}))
        write_json_atomic(self.prog / f"unit-{uid:05d}.json", rec)
        (self.prog / rec1["file"]).unlink(missing_ok=True)
        self.records[uid] = rec

    # -- the dedup decision ---------------------------------------------------------------------------
    def decide(self, units: list[dict]) -> None:
        """Duplicates over the whole corpus in plan order (corpus/dedup.py), from the units' key files."""
        ex, rows, nk, tb, src = [], [], [], [], []
        sizes, base = [], 0
        for u in units:
            with np.load(self.prog / self.stage1[u["id"]]["keys"]) as z:
                ex.append(z["exact"])
                rows.append(z["near_rows"] + base)
                nk.append(z["near_keys"])
                tb.append(z["text_bytes"])
                src.append(z["source"])
            sizes.append(len(ex[-1]))
            base += sizes[-1]
        bands = nk[0].shape[1] if nk else 1
        cat = lambda xs, e: np.concatenate(xs) if xs else e  # noqa: E731
        ex_dup, near_dup, self.dedup_stats = plan_order_duplicates(
            self.cc.dedup, cat(ex, np.zeros(0, np.uint64)), cat(rows, np.zeros(0, np.int64)),
            cat(nk, np.zeros((0, bands), np.uint64)))
        lo = 0
        for u, n, t, s in zip(units, sizes, tb, src):
            e, d = ex_dup[lo:lo + n], near_dup[lo:lo + n]
            keep = ~(e | d)
            names = self.stage1[u["id"]]["source_names"]
            out = {name: {"docs_out": int((keep & (s == i)).sum()), "bytes_out": int(t[keep & (s == i)].sum())}
                   for i, name in enumerate(names)}
            dedup = {"exact": {"docs": int(e.sum()), "bytes": int(t[e].sum())},
                     "near": {"docs": int(d.sum()), "bytes": int(t[d].sum())}}
            self.decisions[u["id"]] = (keep, dedup, out)
            lo += n

    # -- the run --------------------------------------------------------------------------------------
    def run(self, units: list[dict], total_bytes: int) -> None:
        pending = [u for u in units if u["id"] not in self.stage1]
        done_bytes = sum(u["bytes"] for u in units if u["id"] in self.stage1)
        (self.prog / STAGE1).mkdir(parents=True, exist_ok=True)
        bar = Progress("clean", total=total_bytes, initial=done_bytes, unit="B", logger=log)
        procs: dict = {}
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
        n = min(self.workers, max(len(pending), 1))
        serial = self.workers <= 1 or len(units) <= 1
        tasks, results = (None, None) if serial else (ctx.Queue(), ctx.Queue(maxsize=64 * n))
        try:
            if serial:
                cleaner, hasher = Cleaner(self.cc.filters), DedupHasher(self.cc.dedup)
                for unit in pending:
                    self.on_stage1(unit["id"], clean_unit(unit, self.cc, cleaner, hasher, self.prog, bar.update))
            else:
                cc_dict = to_dict(self.cc)
                for _ in range(n):
                    self._spawn(ctx, procs, cc_dict, tasks, results)
                self._pump(ctx, procs, cc_dict, tasks, results, [("clean", u["id"], u) for u in pending], bar)
        except BaseException:
            self._stop(procs, tasks, force=True)
            raise
        finally:
            bar.close()
        t0 = time.process_time()
        log.info("deciding duplicates over %s documents ...", f"{sum(r['docs'] for r in self.stage1.values()):,}")
        self.decide(units)
        log.info("dedup decided over %d documents in %.1f CPU s", sum(r["docs"] for r in self.stage1.values()),
                 time.process_time() - t0)
        todo = [u["id"] for u in units if u["id"] not in self.records]
        bar = Progress("clean: writing parts", total=len(todo), unit="units", logger=log)
        try:
            if serial:
                for uid in todo:
                    keep = self.decisions[uid][0]
                    self.on_done(uid, {"parts": finish_unit(self.stage1[uid], keep, self.prog,
                                                            self.cc.part_size_mb << 20)})
                    bar.update(1)
            else:
                jobs = []
                for uid in todo:
                    keep = self.decisions[uid][0]
                    jobs.append(("finish", uid, (self.stage1[uid], np.packbits(keep).tobytes(), len(keep))))
                self._pump(ctx, procs, to_dict(self.cc), tasks, results, jobs, bar)
        finally:
            bar.close()
            self._stop(procs, tasks, force=False)

    def _spawn(self, ctx, procs: dict, cc_dict: dict, tasks, results) -> None:
        p = ctx.Process(target=_worker_main, args=(cc_dict, str(self.prog), tasks, results), daemon=True)
        p.start()
        procs[p.pid] = p

    def _stop(self, procs: dict, tasks, force: bool) -> None:
        if tasks is not None and not force:
            for _ in procs:
                tasks.put(None)
        for p in procs.values():
            p.join(timeout=0.1 if force else 10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)

    def _pump(self, ctx, procs: dict, cc_dict: dict, tasks, results, jobs: list[tuple], bar) -> None:
        """Hand `jobs` to the workers and handle their messages until every job's unit is done."""
        for j in jobs:
            tasks.put(j)
        kinds = {uid: kind for kind, uid, _ in jobs}
        remaining = set(kinds)
        owner: dict[int, int] = {}   # unit id -> worker pid
        while remaining:
            try:
                kind, uid, payload = results.get(timeout=2.0)
            except queue.Empty:
                bar.update(0)
                self._check_workers(ctx, procs, cc_dict, tasks, results, owner, remaining, kinds)
                continue
            if kind == "start":
                owner[uid] = payload
            elif kind == "progress":
                bar.update(payload)
            elif kind == "stage1":
                self.on_stage1(uid, payload)
                remaining.discard(uid)
                owner.pop(uid, None)
            else:
                self.on_done(uid, payload)
                bar.update(1)
                remaining.discard(uid)
                owner.pop(uid, None)

    def _check_workers(self, ctx, procs: dict, cc_dict: dict, tasks, results, owner: dict, remaining: set,
                       kinds: dict) -> None:
        """A worker that died (killed, crashed in C code) loses its unit: record it, start a new worker."""
        for pid, p in list(procs.items()):
            if p.exitcode is None or p.exitcode == 0:
                continue
            del procs[pid]
            for uid, opid in list(owner.items()):
                if opid != pid:
                    continue
                log.error("worker %d died (exit code %s) in unit %d; its output is dropped", pid, p.exitcode, uid)
                err = {"errors": [{"file": f"unit {uid}", "kind": "worker_died",
                                   "error": f"worker exit code {p.exitcode}; unit dropped"}],
                       "error_counts": {"worker_died": 1}}
                if kinds[uid] == "clean":
                    self.on_stage1(uid, self._empty_stage1(uid, err))
                else:
                    self.on_done(uid, {"parts": [], "lost": True, **err})
                remaining.discard(uid)
                owner.pop(uid)
            if remaining:
                self._spawn(ctx, procs, cc_dict, tasks, results)

    def _empty_stage1(self, uid: int, err: dict) -> dict:
        """The pass-1 record of a unit whose worker died: no documents, the error recorded."""
        s1 = self.prog / STAGE1
        (s1 / f".unit-{uid:05d}.jsonl.zst.tmp").unlink(missing_ok=True)
        (s1 / f"unit-{uid:05d}.jsonl.zst").write_bytes(b"")
        bands = DedupHasher(self.cc.dedup).bands
        _save_npz(self.prog / f"unit-{uid:05d}.keys.npz", {
            "exact": np.zeros(0, np.uint64), "near_rows": np.zeros(0, np.int64),
            "near_keys": np.zeros((0, bands), np.uint64), "text_bytes": np.zeros(0, np.int64),
            "source": np.zeros(0, np.int32)})
        rec = {"unit": uid, "file": f"{STAGE1}/unit-{uid:05d}.jsonl.zst", "keys": f"unit-{uid:05d}.keys.npz",
               "docs": 0, "source_names": [], "sources": {}, "filters": {}, "seconds": 0.0, **err}
        write_json_atomic(s1 / f"unit-{uid:05d}.json", rec)
        return rec


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
            if any(prog.glob("unit-*.json")) or any(prog.glob(f"{STAGE1}/unit-*.json")):
                raise ConfigError(f"{stage.out} holds a corpus run with other inputs or settings "
                                  "(corpus.* config or input files changed). Rerun with --fresh to discard it, "
                                  "or set corpus.out_dir to a new directory.")
        else:
            units = plan["units"]
    write_json_atomic(plan_path, {"fingerprint": fp, "units": units})
    s1 = prog / STAGE1
    s1.mkdir(exist_ok=True)
    referenced = set()
    for rp in sorted(s1.glob("unit-*.json")):   # pass 1 done: its documents (or final parts) and keys exist
        rec = read_json(rp)
        uid = rec["unit"]
        final = prog / f"unit-{uid:05d}.json"
        done = None
        if final.is_file():
            done = read_json(final)
            if not all((prog / p["file"]).is_file() or (stage.out / p.get("final", "-")).is_file()
                       for p in done["parts"]):
                log.warning("%s: parts missing, rewriting unit %d", final, uid)
                final.unlink()
                done = None
        if not (prog / rec["keys"]).is_file() or (done is None and not (prog / rec["file"]).is_file()):
            log.warning("%s: pass-1 output missing, redoing unit %d", rp, uid)
            rp.unlink()
            final.unlink(missing_ok=True)
            continue
        stage.stage1[uid] = rec
        referenced.add(rec["file"])
        if done is not None:
            stage.records[uid] = done
            referenced.update(p["file"] for p in done["parts"])
    for d in (prog, s1):   # parts of a unit killed midway, temp files
        for p in d.iterdir():
            rel = p.relative_to(prog).as_posix()
            if p.name.endswith(".tmp") or (p.name.endswith(".jsonl.zst") and rel not in referenced):
                p.unlink()
    for rp in prog.glob("unit-*.json"):   # a final record without its pass-1 record: redo
        if int(rp.name[5:10]) not in stage.stage1:
            rp.unlink()
    if stage.stage1:
        log.info("resuming: %d of %d units already cleaned, %d written", len(stage.stage1), len(units),
                 len(stage.records))
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
                  "min_chars": d.min_chars, **stage.dedup_stats})
    manifest = {"format": FORMAT, "parts": parts, "docs": sum(p["docs"] for p in parts),
                "bytes": sum(p["bytes"] for p in parts), "sources": sources, "filters": filters, "dedup": dedup,
                "errors": errors, "error_counts": error_counts, "config": to_dict(stage.cc),
                "units": len(units), "seconds": round(seconds, 3)}
    licenses = license_notes(units)   # sources whose terms follow the text (namuwiki: CC BY-NC-SA)
    if licenses:
        manifest["licenses"] = licenses
        for src, note in licenses.items():
            log.warning("license: source %r: %s", src, note)
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
