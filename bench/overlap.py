"""When do Horovod's gradient allreduces start, relative to the backward? Eager vs torch.compile.

    .venv/bin/python bench/overlap.py                       # 3 variants x horovodrun -np 2 (Gloo, CPU)
    .venv/bin/python bench/overlap.py --variants eager compile_block --steps 4 --preset tiny

Each variant runs `horovodrun -np 2 -H localhost:2 --gloo python bench/overlap.py --worker ...` with the
Horovod timeline on (HOROVOD_TIMELINE): the torch engine's model, optimizer and Horovod
DistributedOptimizer exactly as `train.engine: torch` builds them (`train.compile`, `train.compile_scope`),
and the engine's step (forward, backward, synchronize, clip, AdamW) with two marker allreduces, named
`overlap.bwd_begin.<step>` and `overlap.bwd_end.<step>`, enqueued just before and just after
`loss.backward()`. The timeline records when rank 0's background thread takes each tensor up
(NEGOTIATE_ALLREDUCE begins: the gradient's hook has fired) and when its allreduce runs (ALLREDUCE
begins), on one clock, so the markers place every gradient's allreduce inside or after the backward
without comparing clocks. Resolution: Horovod's cycle (HOROVOD_CYCLE_TIME, set to 0.5 ms here).

Variants: `eager` (train.compile false), `compile_model` (whole loss one graph: its backward returns
every gradient at its end), `compile_block` (each transformer block and the head compiled on their own,
as torchtitan does; the engine's default). Per variant, medians over the timed steps (the first
`--warmup` steps compile and are not counted), times in ms relative to the end of the backward
(negative = during it):
- first_allreduce_ms / last_allreduce_ms (timeline): when the first and the last gradient allreduce
  began, relative to the end of the backward of the rank that finished last (no allreduce can start
  before every rank has handed its gradient over, so that backward is the one to hide it behind);
- overlap_fraction (timeline): share of that backward still to run when the first allreduce began,
  (bwd_end - first_allreduce) / (bwd_end - bwd_begin), clipped to [0, 1]. Target with compile on: > 0.5,
  the first allreduce before the backward's midpoint. bench/scaling_model.py reads it;
- hook_first_ms / hook_overlap_fraction: the same for the moment the first gradient was handed to
  Horovod, measured in each worker by a hook on the gradient accumulators registered after Horovod's
  (exact, one clock per process; the timeline's per-rank ready ticks are kept too, as first_enqueue_ms,
  but they come from the coordinator's cycle, which stalls for tens of ms when 2 ranks share 2 cores);
- backward_ms, step_ms: rank 0's durations (perf_counter).
Writes bench/results/overlap.json. On 2 CPU processes communication competes with compute for the
cores, so step times here say little about a GPU cluster; the start times are the point.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

VARIANTS = {   # name -> config overrides
    "eager": {"train.compile": False},
    "compile_model": {"train.compile": True, "train.compile_scope": "model"},
    "compile_block": {"train.compile": True, "train.compile_scope": "block"},
}
MARK = "overlap.bwd_"


# ----------------------------------------------------------------------------------------------------
# the worker (one Horovod rank)


def worker(args) -> None:
    import numpy as np
    import torch

    from common.config import load_config
    from pretrain.engines.torch.engine import TorchEngine
    from pretrain.train.dist import init_dist

    sets = [f"model.preset={args.preset}", "model.dropout=0.0", f"model.vocab_size={args.vocab}",
            "train.engine=torch", "train.device=cpu", f"train.micro_batch={args.micro_batch}",
            f"train.global_batch={2 * args.micro_batch}", f"train.seq_len={args.seq_len}",
            f"train.precision={args.precision}"]
    sets += [f"{k}={str(v).lower()}" for k, v in VARIANTS[args.variant].items()]
    cfg = load_config(REPO / "configs" / "tiny.yaml", sets)
    dist = init_dist("torch")
    hvd = dist.hvd
    eng = TorchEngine(cfg, dist, args.vocab)
    # our own hooks on the gradient accumulators, registered after Horovod's (hooks run in order): the
    # moment each gradient was handed to Horovod, on this process's clock
    ready: dict[str, float] = {}
    accs = []
    for n, p in eng.params.items():
        acc = p.expand_as(p).grad_fn.next_functions[0][0]
        acc.register_hook(lambda *_, n=n: ready.__setitem__(n, time.perf_counter()))
        accs.append(acc)
    rng = np.random.default_rng(dist.rank)
    rows = []
    for step in range(args.warmup + args.steps):
        x = eng._batch(rng.integers(0, args.vocab, (args.micro_batch, args.seq_len + 1)))
        ready.clear()
        t0 = time.perf_counter()
        with eng._autocast():
            loss = eng._loss(x[:, :-1], x[:, 1:], chunk_rows=eng.ce_chunk_rows)
        marks = [hvd.allreduce_async_(torch.zeros(1), name=f"{MARK}begin.{step}")]
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        marks.append(hvd.allreduce_async_(torch.zeros(1), name=f"{MARK}end.{step}"))
        eng.opt.synchronize()                     # the engine's step from here on
        params = list(eng.params.values())
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        torch.nn.utils.clip_grads_with_norm_(params, 1.0, norm)
        with eng.opt.skip_synchronize():
            eng.opt.step()
        eng.opt.zero_grad()
        for h in marks:
            hvd.synchronize(h)
        t3 = time.perf_counter()
        first, last = min(ready.values()), max(ready.values())
        rows.append({"step": step, "forward_s": t1 - t0, "backward_s": t2 - t1, "step_s": t3 - t0,
                     "first_hook_s": first - t2, "last_hook_s": last - t2,
                     "hook_overlap_fraction": (t2 - first) / (t2 - t1)})
    Path(f"{args.out}.{dist.rank}").write_text(json.dumps({"rows": rows, "num_params": eng.num_params,
                                                           "compiled": eng.compiled}))
    dist.barrier()


# ----------------------------------------------------------------------------------------------------
# the timeline


def read_timeline(path: Path) -> list[dict]:
    """Horovod's Chrome-trace JSON; the file may lack its closing bracket (written until shutdown)."""
    text = path.read_text().strip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    return json.loads(text)


def tensor_events(events: list[dict]) -> dict[str, list[dict]]:
    """tensor name -> its occurrences in order, each {"ready": {rank: ts}, "allreduce": ts} (us).

    Horovod writes one trace "process" per tensor (a metadata event names it). Each allreduce of it
    begins a NEGOTIATE_ALLREDUCE phase, inside which an "X" event named after a rank marks when that
    rank handed the tensor over (its gradient hook fired); "ALLREDUCE" begins when every rank has."""
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name" and "name" in e.get("args", {})}
    out: dict[str, list[dict]] = {}
    for e in events:
        if e.get("pid") not in names or "ts" not in e:
            continue
        name = names[e["pid"]].removeprefix("allreduce.")      # Horovod's prefix for named allreduces
        occ = out.setdefault(name, [])
        if e.get("ph") == "B" and e.get("name", "").startswith("NEGOTIATE"):
            occ.append({"ready": {}})
        elif e.get("ph") == "X" and occ and str(e.get("name", "")).isdigit():
            occ[-1]["ready"].setdefault(int(e["name"]), float(e["ts"]))
        elif e.get("ph") == "B" and e.get("name") == "ALLREDUCE" and occ and "allreduce" not in occ[-1]:
            occ[-1]["allreduce"] = float(e["ts"])
    return out


def analyse(events: list[dict], steps: range) -> list[dict]:
    """Per step, from the timeline alone (ms): each rank's backward between its two markers, when it
    handed its first and last gradient to Horovod (relative to its own backward's end), and when the
    allreduces began relative to the end of the last rank's backward (an allreduce cannot start before
    every rank has the gradient, so the slowest rank's backward is the one to hide it behind)."""
    per_tensor = tensor_events(events)
    marks = {n: occ[0] for n, occ in per_tensor.items() if n.startswith(MARK) and occ}
    grads = [o for n, occ in per_tensor.items() if not n.startswith((MARK, "dist.")) for o in occ]
    out = []
    for s in steps:
        b, e = marks.get(f"{MARK}begin.{s}"), marks.get(f"{MARK}end.{s}")
        if b is None or e is None or set(b["ready"]) != set(e["ready"]) or not b["ready"]:
            continue
        ranks = sorted(b["ready"])
        nxt = marks.get(f"{MARK}begin.{s + 1}")
        # this step's gradients: handed over by rank 0 after its begin marker, before its next one
        lo, hi = b["ready"][ranks[0]], (nxt["ready"].get(ranks[0], float("inf")) if nxt else float("inf"))
        mine = [o for o in grads if lo <= o["ready"].get(ranks[0], -1.0) < hi]
        if not mine:
            continue
        row: dict = {"step": s, "tensors": len(mine), "ranks": {}}
        for r in ranks:
            bwd = max(e["ready"][r] - b["ready"][r], 1e-9)
            ready = sorted(o["ready"][r] for o in mine if r in o["ready"])
            frac = min(1.0, max(0.0, (e["ready"][r] - ready[0]) / bwd))
            row["ranks"][r] = {"backward_ms": bwd / 1e3, "first_enqueue_ms": (ready[0] - e["ready"][r]) / 1e3,
                               "last_enqueue_ms": (ready[-1] - e["ready"][r]) / 1e3, "overlap_fraction": frac}
        last = max(ranks, key=lambda r: e["ready"][r])          # the rank whose backward ended last
        end, bwd = e["ready"][last], max(e["ready"][last] - b["ready"][last], 1e-9)
        red = sorted(o["allreduce"] for o in mine if "allreduce" in o)
        row.update({
            "timeline_backward_ms": bwd / 1e3,
            "first_enqueue_ms": statistics.median(v["first_enqueue_ms"] for v in row["ranks"].values()),
            "last_enqueue_ms": statistics.median(v["last_enqueue_ms"] for v in row["ranks"].values()),
            "first_allreduce_ms": (red[0] - end) / 1e3 if red else None,
            "last_allreduce_ms": (red[-1] - end) / 1e3 if red else None,
            "overlap_fraction": min(1.0, max(0.0, (end - red[0]) / bwd)) if red else None})
        out.append(row)
    return out


def _median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def run_variant(name: str, args, tmp: Path) -> dict:
    timeline, out = tmp / f"{name}.timeline.json", tmp / f"{name}.worker.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_"))}
    env.update(HOROVOD_TIMELINE=str(timeline), HOROVOD_CYCLE_TIME="0.5", HOROVOD_CACHE_CAPACITY="0",
               OMP_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(REPO), TORCHINDUCTOR_CACHE_DIR=str(tmp / "inductor"))
    hvdrun = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or "horovodrun"
    cmd = [hvdrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(Path(__file__).resolve()),
           "--worker", "--variant", name, "--out", str(out)]
    for k in ("preset", "vocab", "micro_batch", "seq_len", "precision", "steps", "warmup"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    if r.returncode != 0:
        raise SystemExit(f"{name}: horovodrun exited {r.returncode}\n{(r.stdout + r.stderr)[-4000:]}")
    workers = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    timed = range(args.warmup, args.warmup + args.steps)
    per_step = analyse(read_timeline(timeline), timed)
    rows = [x for x in workers[0]["rows"] if x["step"] in timed]          # rank 0's timings
    hooks = [x for w in workers for x in w["rows"] if x["step"] in timed]  # both ranks
    res = {"name": name, "overrides": {k: v for k, v in VARIANTS[name].items()}, "compiled": workers[0]["compiled"],
           "steps_timed": len(rows), "steps_in_timeline": len(per_step),
           "backward_ms": 1e3 * _median(rows, "backward_s"), "step_ms": 1e3 * _median(rows, "step_s"),
           "forward_ms": 1e3 * _median(rows, "forward_s"), "wall_s": time.perf_counter() - t0,
           "hook_first_ms": 1e3 * _median(hooks, "first_hook_s"), "hook_last_ms": 1e3 * _median(hooks, "last_hook_s"),
           "hook_overlap_fraction": _median(hooks, "hook_overlap_fraction")}
    for k in ("first_enqueue_ms", "last_enqueue_ms", "first_allreduce_ms", "last_allreduce_ms",
              "timeline_backward_ms", "overlap_fraction"):
        res[k] = _median(per_step, k)
    res["tensors_per_step"] = _median(per_step, "tensors")
    res["per_step"] = per_step
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--preset", default="demo", help="model preset (demo: 4 layers x 256 units)")
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per rank (2 ranks on 2 cores: 1)")
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "overlap.json"))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="overlap-") as tmp:
        for name in args.variants:
            print(f"running {name} ...", flush=True)
            results.append(run_variant(name, args, Path(tmp)))
    hdr = (f"{'variant':<15}{'backward':>9}{'step':>8}{'1st hook':>9}{'1st AR':>9}{'last AR':>9}"
           f"{'overlap (hook)':>15}{'overlap (AR)':>13}")
    print("ms relative to the end of the backward (negative = during it), medians over steps")
    print(hdr)

    def f(v, spec):
        return format(v, spec) if v is not None else format("n/a", spec.rstrip("f").rsplit(".", 1)[0] + "s")

    for r in results:
        print(f"{r['name']:<15}{r['backward_ms']:>9.1f}{r['step_ms']:>8.1f}{f(r['hook_first_ms'], '>9.1f')}"
              f"{f(r['first_allreduce_ms'], '>9.1f')}{f(r['last_allreduce_ms'], '>9.1f')}"
              f"{f(r['hook_overlap_fraction'], '>15.2f')}{f(r['overlap_fraction'], '>13.2f')}")
    import torch
    write_result(args.json, {
        "benchmark": "overlap", "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "launcher": "horovodrun -np 2 -H localhost:2 --gloo (CPU)", "preset": args.preset, "vocab": args.vocab,
        "micro_batch": args.micro_batch, "seq_len": args.seq_len, "precision": args.precision,
        "steps": args.steps, "warmup": args.warmup, "omp_threads_per_rank": args.threads,
        "horovod_cycle_time_ms": 0.5,
        "definition": "overlap_fraction = (end of the last rank's backward - first gradient allreduce begin) / "
                      "that backward's duration, from the Horovod timeline (marker allreduces around "
                      "loss.backward()); hook_overlap_fraction: the same for the first gradient handed to "
                      "Horovod (worker-side hooks); times in ms relative to the backward's end",
        "overlap_fraction": {r["name"]: r["overlap_fraction"] for r in results},
        "target": "compile on: first allreduce before the backward's midpoint (overlap_fraction > 0.5)",
        "results": results})


if __name__ == "__main__":
    main()
