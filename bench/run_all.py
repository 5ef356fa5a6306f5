"""Run every benchmark in bench/ one after another (`make bench`); each prints its table and writes
bench/results/<name>.json. Long (about 1.5-2 hours on a 2-core CPU machine, most of it the learning
check, the 50k tokenizer and the downstream evaluation); pass names to run a subset:

    python bench/run_all.py corpus_throughput train_cpu_bench
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (script, arguments) in a sensible order: cheap first, then the ones that need ../shared/data at length
BENCHES: list[tuple[str, list[str]]] = [
    ("corpus_throughput", []),
    ("shards_bench", []),
    ("tokenizer_bench", []),
    ("train_cpu_bench", []),
    ("checkpoint_bench", []),
    ("trainer_checkpoint_bench", []),
    ("torch_throughput", []),          # CPU at tiny size here; `--preset base --device cuda` on a GPU
    ("allreduce_gloo", []),            # horovodrun -np 2 over Gloo: the scaling model's allreduce law checked
    ("overlap", []),                   # horovodrun -np 2: when allreduces start vs the backward, eager/compiled
    ("scaling_model", []),             # on paper: 8/64/512 GPUs (reads the two results above and overlap.json)
    ("learning_check", []),
    ("downstream_eval", []),
]


def main(argv: list[str]) -> int:
    wanted = set(argv) or {name for name, _ in BENCHES}
    unknown = wanted - {name for name, _ in BENCHES}
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(n for n, _ in BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name, args in BENCHES:
        if name not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *args], cwd=HERE.parent)
        print(f"=== {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
