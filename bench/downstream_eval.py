"""Pretrained vs from-scratch GPT-2 on NSMC, at the scale a 2-core CPU allows.

    .venv/bin/python bench/downstream_eval.py                  # the whole bench, see the times below
    .venv/bin/python bench/downstream_eval.py --fresh          # redo every stage
    .venv/bin/python bench/downstream_eval.py --fresh --pretrain-steps 1500 --test-examples 0   # stronger

Time on the 2-core x86_64 VM: idle, the data stages take ~35 s (tokenizer 24 s), pretraining
~8,000 tokens/s (300 steps = 614 k tokens: ~80 s) and each fine-tune + test ~20-30 s, so ~3 minutes in
all; with the cores shared by other jobs (load 6-10) the same run took ~30 minutes (pretraining at
~400 tokens/s, a fine-tune ~8 minutes). `--pretrain-steps 1500` (3.1 M tokens) adds ~5 idle minutes.

1. Pretrain the model of bench/configs/downstream.yaml (demo preset, torch engine, CPU) on
   ../shared/data/ko_dev_corpus.txt with the project's own pipeline: `python -m corpus clean`,
   `tokenizer`, `shards`, then `python -m pretrain.train`. NSMC test reviews are not in that corpus
   (../shared/data/SOURCES.md), so the comparison does not leak test text.
2. Fine-tune it on a seeded subset of NSMC train (5,000 reviews by default: the low-resource setting
   where pretraining matters most; `pretrain.evaluate`, last-token head) and score a seeded 10,000 of
   the 50,000 NSMC test reviews (+-0.45% accuracy at 1 sigma; `--test-examples 0` for all).
3. Do the same with the same architecture and tokenizer from random weights (`--init scratch`), with
   the same fine-tuning settings and data.
Prints a table, writes bench/results/downstream_eval.json and .md. Each pipeline stage that already
finished (its manifest / checkpoint exists) is not redone unless `--fresh`. Work files go to
work/bench/downstream/. Skips (exit 0) when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.results_io import portable, write_result  # noqa: E402

CONFIG = "bench/configs/downstream.yaml"
DATA = "../shared/data"
WORK = "work/bench/downstream"
RESULTS = "bench/results/downstream_eval"


def _run_stage(name: str, argv: list[str], timings: dict) -> None:
    print(f"\n==> {name}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT)
    timings[name] = round(time.perf_counter() - t0, 1)
    if proc.returncode:
        raise SystemExit(f"bench: stage {name!r} failed with exit status {proc.returncode}")


def _cfg_get(key: str, sets: list[str]) -> str:
    from common.config import load_config
    obj = load_config(os.path.join(ROOT, CONFIG), sets)
    for part in key.split("."):
        obj = getattr(obj, part)
    return str(obj)


def pretrain(args: argparse.Namespace, timings: dict) -> str:
    """Run the pipeline stages not yet done; return the checkpoint root."""
    sets = [f"train.max_steps={args.pretrain_steps}"] if args.pretrain_steps else []
    set_args = [a for s in sets for a in ("--set", s)]
    stages = [("clean", "corpus.out_dir", ["-m", "corpus", "clean"]),
              ("tokenizer", "tokenizer.dir", ["-m", "corpus", "tokenizer"]),
              ("shards", "shards.out_dir", ["-m", "corpus", "shards"])]
    for name, key, argv in stages:
        done = os.path.join(ROOT, _cfg_get(key, sets), "tokenizer.json" if name == "tokenizer" else "manifest.json")
        if os.path.isfile(done):
            print(f"==> {name}: done already ({os.path.relpath(done, ROOT)})")
            timings[name] = 0.0
        else:
            _run_stage(name, argv + ["--config", CONFIG] + set_args, timings)
    # resume: auto makes this a no-op when the last checkpoint is at max_steps already
    _run_stage("pretrain", ["-m", "pretrain.train", "--config", CONFIG] + set_args, timings)
    return os.path.join(ROOT, _cfg_get("checkpoint.root", sets))


def pretrain_summary(sets_steps: int) -> dict:
    """Last logged train/valid loss of the pretraining run (metrics.jsonl), if present."""
    path = os.path.join(ROOT, _cfg_get("train.out_dir", [f"train.max_steps={sets_steps}"] if sets_steps else []),
                        "metrics.jsonl")
    out: dict = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                for k in ("step", "loss", "valid_loss", "valid_ppl", "tokens_seen", "tokens_per_s"):
                    if k in rec:
                        out[k] = rec[k]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fresh", action="store_true", help=f"delete {WORK} first and redo every stage")
    p.add_argument("--pretrain-steps", type=int, default=0, help="override train.max_steps of the config")
    p.add_argument("--train-examples", type=int, default=5000, help="NSMC train reviews to fine-tune on")
    p.add_argument("--test-examples", type=int, default=10000, help="NSMC test reviews scored (0 = all 50,000)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning peak learning rate (both models)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--skip-pretrain", action="store_true",
                   help="use the checkpoint already under checkpoint.root; run no pipeline stage")
    p.add_argument("--only", choices=("pretrained", "scratch"), help="fine-tune only this one (no table)")
    p.add_argument("--no-reuse", action="store_true",
                   help="redo a fine-tune even when its result from identical settings is on disk")
    args = p.parse_args(argv)

    if not os.path.isfile(os.path.join(ROOT, DATA, "ko_dev_corpus.txt")) or \
            not os.path.isdir(os.path.join(ROOT, DATA, "nsmc")):
        print(f"bench/downstream_eval.py: skipped: {os.path.normpath(os.path.join(ROOT, DATA))} "
              "(ko_dev_corpus.txt, nsmc/) is not there")
        return 0
    os.chdir(ROOT)
    if args.fresh and os.path.isdir(WORK):
        shutil.rmtree(WORK)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if args.skip_pretrain:
        ckpt_root = os.path.join(ROOT, _cfg_get("checkpoint.root", []))
    else:
        ckpt_root = pretrain(args, timings)

    from common.log import setup_logging
    from pretrain.evaluate import EvalConfig, run
    setup_logging()
    rows = {}
    for init in [args.only] if args.only else ["pretrained", "scratch"]:
        cfg = EvalConfig(task="nsmc", checkpoint=ckpt_root, data=os.path.join(DATA, "nsmc"),
                         out=os.path.join(WORK, "eval"), name="bench-downstream", init=init, lr=args.lr,
                         epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                         seed=args.seed, max_train_examples=args.train_examples,
                         max_valid_examples=2000, max_test_examples=args.test_examples, device="cpu")
        print(f"\n==> fine-tune ({init}) on {args.train_examples} NSMC train reviews", flush=True)
        t0 = time.perf_counter()
        rows[init] = None if args.no_reuse else reuse(cfg)
        if rows[init] is None:
            rows[init] = run(cfg)
            timings[f"finetune_{init}"] = round(time.perf_counter() - t0, 1)
        else:
            print(f"    reusing {rows[init]['reused_from']} (identical settings; --no-reuse to redo)")
            timings[f"finetune_{init}"] = round(rows[init]["seconds"], 1)
    timings["total"] = round(time.perf_counter() - t_all, 1) + sum(
        r["seconds"] for r in rows.values() if "reused_from" in r)
    if args.only:
        return 0

    pre = pretrain_summary(args.pretrain_steps)
    result = {
        "bench": "downstream_eval", "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "load_avg_at_end": os.getloadavg(), "config": CONFIG, "pretraining": pre,
        "finetune": dataclasses.asdict(cfg) | {"init": "both"},
        "results": {k: {m: v for m, v in r.items() if m != "history"} | {"history": r.get("history")}
                    for k, r in rows.items()},
        "timings_s": timings,
        "pretrained_wins": rows["pretrained"]["test_accuracy"] > rows["scratch"]["test_accuracy"],
    }
    md = render(result)
    print("\n" + md)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    from common.io import write_bytes_atomic
    write_result(RESULTS + ".json", result)
    write_bytes_atomic(RESULTS + ".md", portable(md).encode("utf-8"))
    return 0


def reuse(cfg) -> dict | None:
    """The row of an earlier run with identical settings (for `pretrained`: the same checkpoint step)."""
    from pretrain.checkpoint import load_checkpoint
    path = os.path.join(cfg.out, f"nsmc-{cfg.name}-{cfg.init}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        detail = json.load(f)
    if detail.get("config") != dataclasses.asdict(cfg):
        return None
    if cfg.init == "pretrained" and detail.get("step") != load_checkpoint(cfg.checkpoint).step:
        return None
    return dict(detail, reused_from=os.path.relpath(path, ROOT))


def render(res: dict) -> str:
    r, t, ft, pre = res["results"], res["timings_s"], res["finetune"], res["pretraining"]
    lines = ["# Downstream: NSMC, pretrained vs from scratch", "",
             f"Machine: {res['machine']}; config {res['config']}; pretraining "
             f"{pre.get('step', '?')} steps, {pre.get('tokens_seen', '?')} tokens, last valid loss "
             f"{pre.get('valid_loss', '?')} nats/token.",
             f"Fine-tuning (both): {r['pretrained']['train_examples']} NSMC train reviews, {ft['epochs']} epochs, "
             f"lr {ft['lr']:g}, batch {ft['batch_size']}, max length {ft['max_length']}, last-token head; "
             f"test on {r['pretrained']['test_examples']} NSMC test reviews.", "",
             "| model | params | best valid acc | test acc | fine-tune s |", "|---|---:|---:|---:|---:|"]
    for k in ("pretrained", "scratch"):
        lines.append(f"| {k} | {r[k]['params'] / 1e6:.1f}M | {r[k]['best_valid_accuracy']:.4f} | "
                     f"{r[k]['test_accuracy']:.4f} | {r[k]['train_seconds']:.0f} |")
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:g}" for k, v in t.items()), "",
              "KoGPT2's published NSMC accuracy (GPT-2 base, 150k reviews, GPU): 0.899."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
