"""Print where a run's artifacts are and its headline numbers (the last step of `make demo`).

    python -m pretrain.train.summary --config configs/demo.yaml [--elapsed SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from common.config import add_config_args, config_from_args


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a torn last line (killed run) is skipped."""
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _size(path: str) -> str:
    p = Path(path)
    if not p.exists():
        return "missing"
    n = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def summarize(cfg, elapsed: Optional[float] = None) -> str:
    recs = read_metrics(Path(cfg.train.out_dir) / "metrics.jsonl")
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    tps = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
    latest = Path(cfg.checkpoint.root) / "latest"
    ckpt = (Path(cfg.checkpoint.root) / latest.read_text().strip()) if latest.is_file() else cfg.checkpoint.root
    tok = cfg.tokenizer.model or cfg.tokenizer.dir
    rows = [
        ("clean documents", cfg.corpus.out_dir, _size(cfg.corpus.out_dir)),
        ("tokenizer", tok, _size(tok)),
        ("token shards", cfg.shards.out_dir, _size(cfg.shards.out_dir)),
        ("metrics (JSONL, TensorBoard)", cfg.train.out_dir, _size(os.path.join(cfg.train.out_dir, "metrics.jsonl"))),
        ("latest checkpoint", str(ckpt), _size(str(ckpt))),
    ]
    w = max(len(r[0]) for r in rows)
    lines = [f"{name:<{w}}  {path}  ({size})" for name, path, size in rows]
    if train:
        lines.append(f"{'steps trained':<{w}}  {train[-1]['step']} (last train loss {train[-1]['loss']:.3f} nats/token)")
    if evals:
        e = evals[-1]
        lines.append(f"{'validation':<{w}}  step {e['step']}: loss {e['valid_loss']:.3f} nats/token, "
                     f"perplexity {e['valid_ppl']:.1f}")
    if tps:
        lines.append(f"{'throughput':<{w}}  {sum(tps) / len(tps):,.0f} tokens/s (mean of logged steps, all workers)")
    if elapsed is not None:
        lines.append(f"{'wall time':<{w}}  {elapsed:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.train.summary", description=__doc__.split("\n\n")[0])
    add_config_args(p)
    p.add_argument("--elapsed", type=float, help="seconds the pipeline took (printed as is)")
    args = p.parse_args(argv)
    print(summarize(config_from_args(args), args.elapsed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
