"""Training: `python -m pretrain.train --config C` (under horovodrun or alone).

Modules: `cli` (the command line and its exit statuses), `trainer` (the loop: steps, validation,
checkpoints, signals), `data` (WindowDataset: the seeded sample order over the token shards and its
resumable cursor), `schedule` (learning rate), `metrics` (tokens/s, MFU, metrics.jsonl, TensorBoard),
`dist` (Dist: rank, size and collectives, over Horovod or a single process), `summary` (the end-of-demo
report). The loop talks only to an Engine (pretrain/engines) and a Dist.
"""
from pretrain.train.cli import main

__all__ = ["main"]
