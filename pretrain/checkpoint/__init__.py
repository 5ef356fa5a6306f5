"""Checkpoints: write, list, prune and resume, under a local directory or `s3://bucket/prefix`.

Modules: `storage` (local and S3 backends behind one small interface), `writer` (one checkpoint, in
write order), `reader` (load and verify against MANIFEST.json), `manager` (CheckpointManager: what the
training loop uses). Public names are re-exported here: `from pretrain.checkpoint import ...`.

Layout (docs/CONTRACTS.md, "Checkpoints"):

    <root>/step_00001000/model.safetensors      weights, fp32, engine-neutral names
                         optimizer.safetensors  exp_avg.* / exp_avg_sq.*
                         state.json             step, cursor, rng, config, ...
                         tokenizer/             spm.model, tokenizer.json, ...
                         MANIFEST.json          {"files": {relpath: {"size", "sha256"}}}   written last
    <root>/latest                               "step_00001000", written after MANIFEST.json

Ordering is what makes a checkpoint safe to read: files, then MANIFEST.json, then `latest`. A
directory without MANIFEST.json is incomplete and ignored; `latest` only ever names a directory
whose manifest was already written. On a local root the whole directory is built under a temporary
name and renamed into place; on S3 each object appears atomically when its upload completes.

`CheckpointManager.save` copies the arrays (the training loop keeps mutating its own) and returns;
a background thread serializes them (safetensors, never pickle), hashes, uploads and prunes to
the newest `checkpoint.keep_last`. The next save waits for the previous one, and `close()` waits
for the last, so a run never exits before its final checkpoint is stored or has failed loudly.
"""
from __future__ import annotations

from pretrain.checkpoint.manager import CheckpointManager
from pretrain.checkpoint.reader import (FORMAT, LATEST, MANIFEST, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_DIR,
                                        WEIGHTS_FILE, Checkpoint, CheckpointError, load_checkpoint, parse_step,
                                        split_location, step_name)
from pretrain.checkpoint.storage import LocalStorage, S3Storage, Storage, StorageError, open_storage
from pretrain.checkpoint.writer import CheckpointWriteFailed, write_checkpoint

__all__ = ["FORMAT", "LATEST", "MANIFEST", "OPTIMIZER_FILE", "STATE_FILE", "TOKENIZER_DIR", "WEIGHTS_FILE",
           "Checkpoint", "CheckpointError", "CheckpointManager", "CheckpointWriteFailed", "LocalStorage", "S3Storage",
           "Storage", "StorageError", "load_checkpoint", "open_storage", "parse_step", "split_location", "step_name",
           "write_checkpoint"]
