"""Resume from S3 with one download per node, not one per process.

    ck = load_once_per_node(cm, "s3://bucket/run/step_00012000", dist, cfg.checkpoint.node_cache_dir)

Every rank needs the whole checkpoint (weights and optimizer state: 1.5 GB for GPT-2 base). Downloaded
by each of 64 ranks that is 96 GB of S3 traffic and 8 competing downloads per node. Here local rank 0
of each node downloads it into node-local storage and verifies every file against MANIFEST.json (size,
sha256); all ranks wait at a barrier (Dist.allreduce_sum, which also tells everyone whether a node's
download failed); then every rank on the node loads that copy, which `load_checkpoint` verifies again
locally (cheap next to the download, and it catches a damaged node-local disk). A last barrier lets
local rank 0 delete the copy. Checkpoints under a local or shared-filesystem root are read in place by
every rank, as before.

The node directory is `checkpoint.node_cache_dir`, default `<system temp dir>/kogpt-resume-<uid>`:
node-local on every cluster we know (a /tmp shared between nodes would make them overwrite each
other's copy; point the setting at local NVMe or scratch then).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from common.log import get_logger
from pretrain.checkpoint.reader import Checkpoint, CheckpointError, load_checkpoint, split_location

log = get_logger(__name__)


def default_node_dir() -> Path:
    """`<temp dir>/kogpt-resume-<uid>`: node-local, per user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"kogpt-resume-{uid}"


def load_once_per_node(cm: Any, location: str, dist: Any, node_dir: Optional[str] = None) -> Checkpoint:
    """Load checkpoint `location` on every rank; for s3:// only local rank 0 of each node downloads it.

    cm: the run's CheckpointManager (its reader may already hold rank 0's copy, verified while
    resolving `checkpoint.resume`); dist: pretrain.train.dist.Dist (rank, local_rank, collectives).
    Collective: every rank must call it. Returns the Checkpoint with `location` the S3 URL."""
    if not location.startswith("s3://"):
        return cm.load(location)
    root, name = split_location(location)
    base = Path(node_dir) if node_dir else default_node_dir()
    # one folder per checkpoint location, named alike on every rank (sha1: str hash() is salted per process)
    local = base / hashlib.sha1(location.encode("utf-8")).hexdigest()[:12] / name
    error: Optional[BaseException] = None
    if dist.local_rank == 0:
        try:
            reader = cm._reader                   # the manager's reader: rank 0's resolved copy is in it
            reader.fetch_into(reader.storage(root), name, local)
            log.info("resume: %s downloaded and verified once for this node, in %s", location, local)
        except BaseException as e:   # reported to every rank through the barrier below, then raised here
            error = e
    failed = int(round(float(dist.allreduce_sum(1.0 if error is not None else 0.0))))
    if error is not None:
        raise error
    if failed:
        raise CheckpointError(f"resume from {location}: the download failed on {failed} node(s); the first "
                              "process of each such node (local rank 0) logged why")
    try:
        ck = load_checkpoint(str(local))
    finally:
        dist.barrier()                            # every rank of the node has read the copy
        if dist.local_rank == 0:
            shutil.rmtree(local.parent, ignore_errors=True)
    return dataclasses.replace(ck, location=location)
