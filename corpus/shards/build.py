"""The shards stage (`make shards`): plans the parts, runs the encoding workers, merges their output into
shards and writes the manifest last."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional


from common.io import read_json, sha256_file
from corpus.shards.read import (
    FORMAT, SPLITS, ShardsError, check_tokenizer)
from corpus.tokenizer import Tokenizer

from corpus.shards.encode import _MAX_ERRORS, _encode_part, _init_worker
from corpus.shards.write import _remove_stale, _write_manifest, merge_files

log = logging.getLogger("corpus.shards")


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished (joined) worker processes
    return ru.ru_utime + ru.ru_stime


def build_shards(cfg: Any, workers: Optional[int] = None) -> dict:
    """`make shards`: encode `corpus.out_dir` with the configured tokenizer into `shards.out_dir`.

    The tokenizer is `tokenizer.model` when set (e.g. KoGPT2's .spiece), else `tokenizer.dir`.
    Returns the manifest. Refuses an out_dir holding shards of another tokenizer.
    """
    from common.config import to_dict
    from common.progress import Progress
    from common.schema import cpu_count

    s, out, clean = cfg.shards, Path(cfg.shards.out_dir), Path(cfg.corpus.out_dir)
    tok_path = cfg.tokenizer.model or cfg.tokenizer.dir
    tok = Tokenizer.load(tok_path)
    if tok.eos_id is None or tok.bos_id is None:
        raise ShardsError(f"{tok_path} has no {'</s>' if tok.eos_id is None else '<s>'} piece: every document is "
                          "stored as <s> ids </s>; use a model that has both (KoGPT2's .spiece does)")
    if tok.vocab_size > 65536:
        raise ShardsError(f"{tok_path} has {tok.vocab_size} pieces; uint16 shards hold at most 65,536")
    if not (clean / "manifest.json").is_file():
        raise ShardsError(f"{clean}/manifest.json is missing: run `make corpus` first (corpus.out_dir)")
    parts = read_json(clean / "manifest.json")["parts"]
    inputs = {"clean_manifest_sha256": sha256_file(clean / "manifest.json"), "valid_fraction": s.valid_fraction,
              "seed": s.seed, "shard_tokens": s.shard_tokens}
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").is_file():
        old = read_json(out / "manifest.json")
        check_tokenizer(old, tok.sha256)  # never mix tokenizers in one directory
        if old.get("inputs") == inputs and old.get("format") == FORMAT:   # v1 shards are re-encoded
            log.info("%s is up to date (same corpus, tokenizer and settings): nothing to do", out)
            return old
        (out / "manifest.json").unlink()  # the old files are about to be replaced
    parts_dir = out / ".parts"
    parts_dir.mkdir(exist_ok=True)
    done: dict[int, dict] = {}
    tasks = []
    for k, p in enumerate(parts):
        stem = parts_dir / f"part-{k:05d}"
        key = {"format": FORMAT, "file": p["file"], "sha256": p.get("sha256"), "tokenizer_sha256": tok.sha256,
               "seed": s.seed, "valid_fraction": s.valid_fraction}
        marker = parts_dir / f"part-{k:05d}.done.json"
        if marker.is_file() and read_json(marker).get("key") == key:
            done[k] = read_json(marker)
            continue
        tasks.append({"k": k, "file": p["file"], "path": str(clean / p["file"]), "stem": str(stem), "key": key,
                      "seed": s.seed, "valid_fraction": s.valid_fraction, "batch_chars": s.batch_chars,
                      "docs": p.get("docs", 0)})
    n = workers or s.workers or cpu_count()
    procs = max(1, min(n, len(tasks)))
    for t in tasks:
        t["threads"] = max(1, n // procs)  # few parts: SentencePiece threads inside each process
    log.info("%d parts to encode (%d already done) with %d processes x %d threads", len(tasks), len(done),
             procs, max(1, n // procs))
    t0, cpu0 = time.time(), _children_cpu()
    if tasks:
        import multiprocessing as mp
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        counter = ctx.Value("q", 0)
        bar = Progress("encoding", total=sum(t["docs"] for t in tasks) or None, unit="docs", logger=log)
        with ctx.Pool(procs, _init_worker, (str(tok.model_path), counter)) as pool:
            res = pool.map_async(_encode_part, tasks, chunksize=1)
            while not res.ready():
                res.wait(0.5)
                bar.update(counter.value - bar.done)
            for t, d in zip(tasks, res.get()):
                done[t["k"]] = d
        bar.update(counter.value - bar.done)
        bar.close()
    t1, cpu = time.time(), _children_cpu() - cpu0
    splits = {sp: merge_files([(parts_dir / done[k]["files"][sp]["bin"], parts_dir / done[k]["files"][sp]["idx"])
                               for k in range(len(parts))], out, sp, s.shard_tokens) for sp in SPLITS}
    _remove_stale(out, {e[x] for files in splits.values() for e in files for x in ("bin", "idx")})
    tok.save(out / "tokenizer")  # shards are self-contained: inspect and the trainer can decode them
    counts = {c: sum(d["counts"][c] for d in done.values()) for c in ("docs_in", "bad_docs", "empty_docs")}
    errors = [e for k in sorted(done) for e in done[k]["errors"]][:_MAX_ERRORS]
    encoded = sum(done[t["k"]]["files"][sp]["tokens"] for t in tasks for sp in SPLITS)
    manifest = _write_manifest(out, {"vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
                                     "sha256": tok.sha256},
                               splits, {"tokenizer": {"source": str(tok_path), "dir": "tokenizer"},
                                        "inputs": inputs, "counts": counts, "errors": errors,
                                        "encode": {"seconds": round(t1 - t0, 3), "cpu_seconds": round(cpu, 3),
                                                   "tokens": encoded,
                                                   "processes": procs, "workers": n},
                                        "config": to_dict(s)})
    shutil.rmtree(parts_dir)
    if counts["bad_docs"]:
        log.warning("%d bad documents skipped (first: %s); see %s/manifest.json 'errors'",
                    counts["bad_docs"], errors[0] if errors else "?", out)
    log.info("wrote %s: train %d tokens / %d docs, valid %d tokens / %d docs; encoded %d tokens in %.1f s "
             "(%.0f tokens/s)", out, manifest["splits"]["train"]["tokens"], manifest["splits"]["train"]["docs"],
             manifest["splits"]["valid"]["tokens"], manifest["splits"]["valid"]["docs"], encoded, t1 - t0,
             encoded / max(t1 - t0, 1e-9))
    return manifest
