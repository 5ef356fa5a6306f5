"""Time the real trainer is blocked per checkpoint, GPT-2 base size, both engines (CPU).

    .venv/bin/python bench/trainer_checkpoint_bench.py [--engines mxnet torch] [--saves 4]

Runs `python -m pretrain.train` with the base preset (12 x 768, vocab 50,000: 124M parameters,
1.49 GB of fp32 weights + AdamW moments) on short sequences (one sequence of --seq-len tokens a step)
with a checkpoint every --every steps to a local directory. The trainer records each save's blocked
time (`kind: checkpoint` in metrics.jsonl): `blocked_s` in all, of which `waited_for_previous_s`
waiting for the previous checkpoint's background write (only when saves come faster than the disk
takes them), the rest rank 0 copying the state to host memory. Target: under 1 s for the base model.
Writes bench/results/trainer_checkpoint.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from bench.results_io import write_result  # noqa: E402
from common.schema import cpu_count  # noqa: E402
from train_fixtures import make_run_inputs  # noqa: E402  (tests/train_fixtures.py: tokenizer + shards)


def run_engine(engine: str, saves: int, every: int, seq_len: int, tok: Path, shards: Path, out: Path) -> dict:
    sets = {"model.preset": "base", "model.vocab_size": 50000, "model.dropout": 0.0, "train.engine": engine,
            "train.device": "cpu", "train.seq_len": seq_len, "train.micro_batch": 1, "train.global_batch": 1,
            "train.max_steps": saves * every, "train.eval_every": 0, "train.log_every": 1,
            "checkpoint.every_steps": every,
            "checkpoint.keep_last": 2, "checkpoint.root": out / "ckpt", "train.out_dir": out,
            "tokenizer.dir": tok, "train.shards": shards, "log.tensorboard": "false"}
    if engine == "torch":
        sets["train.compile"] = "false"
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    r = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "configs/tiny.yaml", *args], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{engine} run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ck = [x for x in recs if x["kind"] == "checkpoint"]
    blocked = [round(x["blocked_s"], 3) for x in ck]
    copy = [round(x["blocked_s"] - x["waited_for_previous_s"], 3) for x in ck]
    step_s = [1.0 / x["tokens_per_s"] * seq_len for x in recs if x["kind"] == "train" and x.get("tokens_per_s")]
    sizes = sum(f.stat().st_size for f in (out / "ckpt" / f"step_{saves * every:08d}").glob("*.safetensors"))
    return {"engine": engine, "saves": len(ck), "every_steps": every, "seq_len": seq_len,
            "median_step_s": round(sorted(step_s)[len(step_s) // 2], 3), "blocked_s": blocked, "copy_s": copy,
            "max_blocked_s": max(blocked), "max_copy_s": max(copy), "checkpoint_bytes": sizes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", nargs="+", default=["mxnet", "torch"])
    ap.add_argument("--saves", type=int, default=4)
    ap.add_argument("--every", type=int, default=3, help="steps between checkpoints")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", default=str(REPO / "bench/results/trainer_checkpoint.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainer-ckpt-bench-") as tmp:
        tok, shards = make_run_inputs(Path(tmp) / "inputs", n_docs=200)
        for engine in args.engines:
            rows.append(run_engine(engine, args.saves, args.every, args.seq_len, tok, shards, Path(tmp) / engine))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ntrainer blocked per checkpoint, GPT-2 base (124M params, {rows[0]['checkpoint_bytes'] / 1e9:.2f} GB "
          f"on disk), local root, {cpu_count()} cores")
    print(f"{'engine':>8}{'step s':>8}{'max blocked s':>15}{'max copy s':>12}   blocked per save (s)")
    for r in rows:
        print(f"{r['engine']:>8}{r['median_step_s']:>8.2f}{r['max_blocked_s']:>15.3f}{r['max_copy_s']:>12.3f}"
              f"   {r['blocked_s']}")
    write_result(args.out, {"bench": "trainer_checkpoint", "preset": "base", "vocab": 50000,
                            "machine": {"cpus": cpu_count(), "platform": platform.platform()},
                            "target_blocked_s": 1.0, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
