"""Check the scaling model's allreduce law on this machine: 2 CPU processes over Gloo (Horovod).

    python bench/allreduce_gloo.py                 # launches `horovodrun -np 2 --gloo` itself (~1 minute)
    python bench/allreduce_gloo.py --np 2 --reps 5 --fit-mb 1,4,16,64

bench/scaling_model.py prices an allreduce of S bytes over a ring of p ranks as
T(S) = 2(p-1) alpha + 2(p-1)/p S / B. Here p = 2, so T(S) = a + b S. The check: fit a and b on a few
small sizes (least squares on each size's median time), then predict the allreduce of GPT-2 base's
whole fp32 gradient (124,242,432 floats = 0.497 GB, one tensor as Horovod sends a gradient larger
than its fusion buffer) and measure it; also the same gradient with Horovod's fp16 compression, which
the model prices as half the bytes. Each timed allreduce (op Average, as the trainer's) follows a
barrier; a rep's time is the slower rank's, and each size's time is the fastest rep: the machine's
2 cores are shared, and the minimum is the estimate least moved by other jobs (medians are kept too).
The sizes are measured round-robin, so load from other jobs falls on all of them alike.

Writes bench/results/allreduce_gloo.json and prints a table. Needs horovod with torch and Gloo.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402
from bench.scaling_model import gpt2_params  # noqa: E402


def base_grad_floats() -> int:
    """GPT-2 base's parameter count (vocab 50,000, ctx 1024): the fp32 gradient's length."""
    return gpt2_params(12, 768, 3072, 50_000, 1024)["total"]


def worker(args) -> int:
    """One rank: time allreduces of each size; rank 0 writes every rank's times to args.raw."""
    import horovod.torch as hvd
    import torch
    hvd.init()
    torch.set_num_threads(1)                     # 2 ranks on 2 cores
    token = torch.zeros(1)

    def timed(x: "torch.Tensor", name: str, fp16: bool) -> float:
        hvd.allreduce(token, name=f"barrier.{name}")
        t0 = time.perf_counter()
        if fp16:
            hvd.allreduce(x, op=hvd.Average, name=name, compression=hvd.Compression.fp16)
        else:
            hvd.allreduce_(x, op=hvd.Average, name=name)
        return time.perf_counter() - t0

    plan = [(int(mb * 2 ** 20) // 4, False, args.reps) for mb in args.fit_mb]
    plan += [(args.target_floats, False, args.target_reps), (args.target_floats, True, args.target_reps)]
    data = {n: torch.randn(n) for n, _, _ in plan}          # random data (Gloo sums it)
    for n, fp16, _ in plan:
        timed(data[n], f"warm.{n}.{fp16}", fp16)
    # Round-robin over the sizes, so that a burst of load from other jobs on the shared cores falls on
    # every size alike instead of on whichever happened to be measured then.
    times: dict[tuple, list] = {(n, fp16): [] for n, fp16, _ in plan}
    for i in range(max(reps for _, _, reps in plan)):
        for n, fp16, reps in plan:
            if i < reps:
                times[(n, fp16)].append(timed(data[n], f"ar.{n}.{fp16}.{i}", fp16))
    out = []
    for n, fp16, _ in plan:
        mine = torch.tensor(times[(n, fp16)], dtype=torch.float64)
        every = hvd.allgather(mine.unsqueeze(0), name=f"gather.{n}.{fp16}")       # (ranks, reps)
        slowest = every.max(dim=0).values.tolist()
        out.append({"floats": n, "bytes": 4 * n, "fp16": fp16, "times_s": slowest})
    if hvd.rank() == 0:
        Path(args.raw).write_text(json.dumps({"size": hvd.size(), "runs": out}))
    hvd.shutdown()
    return 0


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of y = a + b x minimising the squared *relative* residuals (weights 1/y^2), so the
    small sizes, which pin the latency, count as much as the large ones, which pin the bandwidth."""
    w = [1.0 / (y * y) for y in ys]
    sw = sum(w)
    mx = sum(wi * x for wi, x in zip(w, xs)) / sw
    my = sum(wi * y for wi, y in zip(w, ys)) / sw
    sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(w, xs))
    b = sum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, xs, ys)) / sxx
    return my - b * mx, b


def launch(args) -> dict:
    horovodrun = shutil.which("horovodrun", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if horovodrun is None:
        raise SystemExit("horovodrun not found next to this python or on PATH: install horovod with Gloo "
                         "(make install), or run with the project's .venv/bin/python")
    with tempfile.TemporaryDirectory(prefix="allreduce-gloo-") as tmp:
        raw = Path(tmp) / "raw.json"
        cmd = [horovodrun, "-np", str(args.np), "-H", f"localhost:{args.np}", "--gloo", sys.executable,
               str(Path(__file__).resolve()), "--worker", "--raw", str(raw), "--reps", str(args.reps),
               "--target-reps", str(args.target_reps), "--fit-mb", ",".join(f"{m:g}" for m in args.fit_mb),
               "--target-floats", str(args.target_floats)]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, timeout=args.timeout)
        if proc.returncode != 0 or not raw.is_file():
            raise SystemExit(f"horovodrun exited with {proc.returncode}: {' '.join(cmd)}")
        data = json.loads(raw.read_text())
        data["wall_s"] = time.perf_counter() - t0
        return data


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11, help="timed allreduces per fit size")
    ap.add_argument("--target-reps", type=int, default=6)
    ap.add_argument("--fit-mb", default="1,4,16,64,128", help="sizes (MiB of fp32) the line is fitted on")
    ap.add_argument("--target-floats", type=int, default=0, help="0 = GPT-2 base's parameter count")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "allreduce_gloo.json"))
    args = ap.parse_args(argv)
    args.fit_mb = [float(m) for m in str(args.fit_mb).split(",") if m.strip()]
    args.target_floats = args.target_floats or base_grad_floats()
    if args.worker:
        return worker(args)
    if len(args.fit_mb) < 2:
        ap.error("--fit-mb needs at least two sizes to fit a line")

    data = launch(args)
    fit_runs = [r for r in data["runs"] if r["floats"] != args.target_floats]
    xs = [r["bytes"] for r in fit_runs]
    ys = [min(r["times_s"]) for r in fit_runs]
    a, b = fit_line(xs, ys)
    p = data["size"]
    # T = 2(p-1) alpha + 2(p-1)/p S/B  =>  alpha = a / (2(p-1)),  B = 2(p-1)/p / b
    alpha_s, bw = a / (2 * (p - 1)), 2 * (p - 1) / p / b
    target = [r for r in data["runs"] if r["floats"] == args.target_floats]
    full = next(r for r in target if not r["fp16"])
    half = next(r for r in target if r["fp16"])
    pred, meas = a + b * full["bytes"], min(full["times_s"])
    pred16, meas16 = a + b * full["bytes"] / 2, min(half["times_s"])
    load = os.getloadavg()
    result = {
        "bench": "allreduce_gloo", "ranks": p, "backend": "horovod gloo (CPU, loopback)",
        "fit": {"sizes_bytes": xs, "min_s": ys, "median_s": [statistics.median(r["times_s"]) for r in fit_runs], "a_s": a, "b_s_per_byte": b, "alpha_s": alpha_s,
                "bandwidth_gbs": bw / 1e9},
        "check": {"bytes": full["bytes"], "floats": full["floats"], "predicted_s": pred, "measured_s": meas,
                  "error_pct": 100 * (pred - meas) / meas, "times_s": full["times_s"],
                  "measured_median_s": statistics.median(full["times_s"]),
                  "fp16": {"bytes_sent": full["bytes"] // 2, "predicted_s": pred16, "measured_s": meas16,
                           "error_pct": 100 * (pred16 - meas16) / meas16, "times_s": half["times_s"]}},
        "runs": data["runs"], "wall_s": data["wall_s"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_end": [round(x, 2) for x in load]},
        "command": " ".join(["bench/allreduce_gloo.py"] + (argv if argv is not None else sys.argv[1:])),
    }
    print(f"\nGloo allreduce, {p} ranks on {os.cpu_count()} CPUs (load {load[0]:.1f}): fit T = {1e3 * a:.2f} ms + "
          f"S / {bw / 1e9:.2f} GB/s (alpha {1e6 * alpha_s:.0f} us per hop)")
    print("| size | fastest s | fit s |")
    print("|-----:|---------:|------:|")
    for x, y in zip(xs, ys):
        print(f"| {x / 2 ** 20:g} MiB | {y:.4f} | {a + b * x:.4f} |")
    print(f"| GPT-2 base gradient {full['bytes'] / 1e9:.3f} GB fp32 | measured {meas:.3f} | predicted {pred:.3f} "
          f"({100 * (pred - meas) / meas:+.0f}%) |")
    print(f"| same, fp16 compression | measured {meas16:.3f} | predicted {pred16:.3f} "
          f"({100 * (pred16 - meas16) / meas16:+.0f}%) |")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
