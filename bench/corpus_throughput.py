"""Corpus-stage throughput: MB/s per core end to end, plus peak memory.

    .venv/bin/python bench/corpus_throughput.py [--data ../shared/data/ko_dev_corpus.txt] [--workers 2]

Runs `python -m corpus clean` logic (run_clean) with the default filters and dedup on the dev corpus
into a temporary directory, in a fresh process so the peak RSS figures are this run's only. Also
times the single-process pieces (cleaning, dedup hashing, datasketch's MinHash.bulk for comparison).
Prints a table and writes bench/results/corpus_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_io import write_result  # noqa: E402

CHILD = r"""
import json, resource, sys, time, logging
sys.path.insert(0, sys.argv[1])
from common.config import load_config
from common.log import setup_logging
from corpus.pipeline import run_clean
setup_logging(logging.WARNING)
cfg = load_config(None, [f"corpus.inputs=[{{path: {sys.argv[2]}, format: text, source: dev}}]",
                         f"corpus.out_dir={sys.argv[3]}"])
t = time.time()
m = run_clean(cfg, workers=int(sys.argv[4]), fresh=True)
dt = time.time() - t
ru_s, ru_c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime
print(json.dumps({"seconds": dt, "cpu_seconds": cpu, "docs_out": m["docs"], "bytes_out": m["bytes"],
                  "docs_in": sum(s["docs_in"] for s in m["sources"].values()),
                  "dedup": {k: m["dedup"][k] for k in ("exact", "near")},
                  "rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def pieces(data: Path, limit_mb: int = 6) -> dict:
    """Single-process timings of the stage's parts on the first `limit_mb` MB (seconds, MB/s)."""
    from common.schema import DedupConfig, FilterConfig
    from corpus.clean import Cleaner
    from corpus.dedup import DedupHasher

    text = data.read_bytes()[: limit_mb << 20].decode("utf-8", "ignore")
    lines = text.split("\n")
    mb = len(text.encode()) / 1e6
    out = {}
    c = Cleaner(FilterConfig())
    t = time.perf_counter()
    kept = []
    for i in range(0, len(lines), 8192):
        cl, keep, _, _ = c.clean_batch(lines[i:i + 8192])
        kept += [x for x, k in zip(cl, keep) if k]
    out["clean_MBps"] = mb / (time.perf_counter() - t)
    h = DedupHasher(DedupConfig())
    t = time.perf_counter()
    for i in range(0, len(kept), 8192):
        h.hash_batch(kept[i:i + 8192])
    out["dedup_hash_MBps"] = mb / (time.perf_counter() - t)
    try:
        from datasketch import MinHash

        long = [x for x in kept if len(x) >= 50][:3000]
        t = time.perf_counter()
        MinHash.bulk([[x[j:j + 5].encode() for j in range(len(x) - 4)] for x in long], num_perm=64)
        ds = time.perf_counter() - t
        t = time.perf_counter()
        h.signatures(long)
        ours = time.perf_counter() - t
        out["minhash_docs_per_s_datasketch"] = len(long) / ds
        out["minhash_docs_per_s_ours"] = len(long) / ours
    except ImportError:
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/ko_dev_corpus.txt"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_file():
        print(f"{data} not found: pass --data FILE", file=sys.stderr)
        return 2
    size = data.stat().st_size
    runs = {}
    for w in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(data), f"{tmp}/out", str(w)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
        r["MBps"] = size / 1e6 / r["seconds"]
        r["MBps_per_core"] = r["MBps"] / w
        # MB per CPU-second of all the stage's processes: the per-core figure when cores are not shared
        r["MB_per_cpu_second"] = size / 1e6 / r["cpu_seconds"]
        runs[w] = r
    pc = pieces(data)
    result = {"data": str(data), "input_MB": size / 1e6, "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "load_average_1min": os.getloadavg()[0],
              "runs": {str(k): v for k, v in runs.items()}, "single_process_pieces": pc}
    print(f"corpus stage on {data.name} ({size / 1e6:.1f} MB), {result['machine']}, "
          f"load average {result['load_average_1min']:.1f}")
    print(f"{'workers':>8}{'seconds':>9}{'MB/s':>7}{'MB/s/core':>10}{'MB/cpu-s':>10}{'docs in':>9}{'docs out':>9}"
          f"{'RSS parent MB':>14}{'RSS worker MB':>14}")
    for w, r in runs.items():
        print(f"{w:>8}{r['seconds']:>9.2f}{r['MBps']:>7.2f}{r['MBps_per_core']:>10.2f}{r['MB_per_cpu_second']:>10.2f}"
              f"{r['docs_in']:>9}{r['docs_out']:>9}{r['rss_parent_mb']:>14.0f}{r['rss_worker_mb']:>14.0f}")
    for k, v in pc.items():
        print(f"  {k:<36}{v:>12.1f}")
    write_result(ROOT / "bench/results/corpus_throughput.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
