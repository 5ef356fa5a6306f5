"""CPU training throughput of the MXNet engine, and what the fused GELU buys.

    .venv/bin/python bench/train_cpu_bench.py [--steps 6] [--presets tiny small]

1. tokens/s of full training steps (forward, backward, Horovod allreduce, clipping, AdamW) for the
   tiny and small presets with 1 process (OMP_NUM_THREADS = all cores, and 1) and 2 Horovod
   processes (horovodrun --gloo, cores/2 threads each), random token batches (the data pipeline is
   not measured). Global batch = micro_batch x processes, so tokens/s compare directly.
2. The FFN block (fc -> GELU -> proj, forward + backward, hybridized) with the fused exact-erf GELU
   (`LeakyReLU(act_type='gelu')`, one kernel) against the same block with the tanh approximation
   built from separate elementwise ops, interleaved in the same process, same shapes; and the same
   comparison for a whole small-preset training step.

Prints a table and writes bench/results/train_cpu_bench.json.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

SHAPES = {  # preset: (seq_len, micro_batch per worker, vocab)
    "tiny": (64, 8, 1000),
    "small": (128, 4, 8000),
}


def _cfg(preset: str):
    from common.config import load_config
    seq, micro, _ = SHAPES[preset]
    return load_config(REPO / "configs/tiny.yaml", [f"model.preset={preset}", "model.num_layers=null",
                                                     "model.units=null", "model.num_heads=null",
                                                     "model.max_length=null", f"train.seq_len={seq}",
                                                     f"train.micro_batch={micro}", "train.device=cpu"])


def worker(preset: str, steps: int, out: str) -> None:
    """One process of the throughput run (under horovodrun or alone)."""
    from pretrain.train.dist import init_dist
    from pretrain.engines.mxnet.engine import MXNetEngine
    seq, micro, vocab = SHAPES[preset]
    dist = init_dist("mxnet")
    eng = MXNetEngine(_cfg(preset), dist, vocab)
    rng = np.random.default_rng(dist.rank)
    batch = [rng.integers(0, vocab, (micro, seq + 1)).astype(np.int32)]
    for _ in range(2):                       # warm-up: graph build, memory planning
        eng.train_step(batch, 1e-4)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        eng.train_step(batch, 1e-4)
    dist.barrier()
    dt = time.perf_counter() - t0
    if dist.is_root:
        tokens = steps * micro * seq * dist.size
        Path(out).write_text(json.dumps({"preset": preset, "workers": dist.size, "params": eng.num_params,
                                         "seq_len": seq, "micro_batch": micro, "steps": steps,
                                         "seconds": dt, "tokens_per_s": tokens / dt}))


def run_throughput(preset: str, np_: int, steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        py = [sys.executable, __file__, "--worker", preset, "--steps", str(steps), "--out", out]
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
        cmd = py if np_ == 1 else [str(Path(sys.executable).parent / "horovodrun"), "-np", str(np_),
                                   "-H", f"localhost:{np_}", "--gloo"] + py
        subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        r = json.loads(Path(out).read_text())
        r["omp_threads_per_worker"] = int(env["OMP_NUM_THREADS"])
        return r


def gelu_compare(reps: int) -> dict:
    """Fused erf GELU vs unfused tanh GELU: FFN block and whole small-preset step, interleaved."""
    import mxnet as mx
    from mxnet import autograd
    from pretrain.engines.mxnet.model import GPT2FFN, GPT2LossBlock, build_model, init_gpt2

    seq, micro, vocab = SHAPES["small"]
    units = 512
    results: dict = {}
    x = mx.nd.random.normal(shape=(micro, seq, units))
    blocks = {}
    for gelu in ("erf", "tanh"):
        mx.random.seed(0)
        b = GPT2FFN(units, 4 * units, gelu=gelu, prefix=f"ffn_{gelu}_")
        b.initialize(mx.init.Normal(0.02))
        b.hybridize(static_alloc=True, static_shape=True)
        blocks[gelu] = b
    cfg = _cfg("small")
    models = {}
    for gelu in ("erf", "tanh"):
        mx.random.seed(0)
        m = build_model(cfg.model, vocab, gelu=gelu)
        init_gpt2(m)
        lb = GPT2LossBlock(m)
        lb.hybridize(static_alloc=True, static_shape=True)
        models[gelu] = lb
    ids = mx.nd.array(np.random.default_rng(0).integers(0, vocab, (micro, seq + 1)), dtype="int32")

    def ffn_step(b):
        x.attach_grad()
        with autograd.record():
            y = b(x).sum()
        y.backward()
        mx.nd.waitall()

    def model_step(lb):
        with autograd.record():
            loss = lb(ids[:, :-1], ids[:, 1:])
        loss.backward()
        mx.nd.waitall()

    for name, fn, objs, n in (("ffn_block", ffn_step, blocks, reps * 5), ("small_model_step", model_step, models, reps)):
        times = {"erf": [], "tanh": []}
        for g in ("erf", "tanh"):
            fn(objs[g])                                   # warm-up
        for _ in range(n):                                # interleaved: same machine state for both
            for g in ("erf", "tanh"):
                t0 = time.perf_counter()
                fn(objs[g])
                times[g].append(time.perf_counter() - t0)
        med = {g: float(np.median(v)) for g, v in times.items()}
        results[name] = {"fused_erf_ms": 1e3 * med["erf"], "unfused_tanh_ms": 1e3 * med["tanh"],
                         "speedup": med["tanh"] / med["erf"], "reps": n,
                         "shape": [micro, seq, units] if name == "ffn_block" else [micro, seq]}
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--gelu-reps", type=int, default=10)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out)
        return 0
    cores = len(os.sched_getaffinity(0))
    layouts = [(1, cores), (1, 1), (2, max(1, cores // 2))]     # (processes, OMP threads each)
    rows = [run_throughput(p, n, args.steps, th) for p in args.presets for n, th in layouts]
    gelu = gelu_compare(args.gelu_reps)
    print(f"{'preset':<8}{'params':>12}{'workers':>9}{'threads/w':>11}{'tokens/s':>12}")
    for r in rows:
        print(f"{r['preset']:<8}{r['params']:>12,}{r['workers']:>9}{r['omp_threads_per_worker']:>11}"
              f"{r['tokens_per_s']:>12,.0f}")
    print(f"\n{'GELU':<18}{'fused erf ms':>14}{'unfused tanh ms':>17}{'speedup':>9}")
    for k, v in gelu.items():
        print(f"{k:<18}{v['fused_erf_ms']:>14.2f}{v['unfused_tanh_ms']:>17.2f}{v['speedup']:>8.2f}x")
    machine = f"{platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores ({platform.processor() or 'unknown'})"
    result = {"machine": machine, "throughput": rows, "gelu": gelu,
              "note": "random token batches; 2 warm-up steps then --steps timed steps; shared VM"}
    write_result(REPO / "bench/results/train_cpu_bench.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
