"""Pretrain GPT-2: `python -m pretrain.train --config configs/X.yaml [--set key=value ...]`.

    python -m pretrain.train --config configs/tiny.yaml                       # one process (CPU or 1 GPU)
    horovodrun -np 2 -H localhost:2 --gloo python -m pretrain.train --config configs/tiny.yaml
    horovodrun -np 64 -hostfile hosts --mpi python -m pretrain.train --config configs/base.yaml

Reads the tokenizer (`tokenizer.dir` or `tokenizer.model`) and the token shards (`train.shards`),
builds the engine named by `train.engine` (auto: pretrain/engines/choice.py), resumes per `checkpoint.resume` (auto | none | PATH),
and trains to `train.max_steps`, logging on rank 0 to stderr, `<train.out_dir>/metrics.jsonl` and
`<train.out_dir>/tensorboard/`. The loop itself is in pretrain/train/trainer.py.

Exit status: 0 done; 2 a config/data/checkpoint problem (the message names the fix); 3 the loss
diverged (NaN/Inf; the last good checkpoint is intact); 4 stopped by SIGTERM/SIGUSR1 (spot
interruption, Slurm preemption) after saving a checkpoint at the step boundary: run again to
continue; 5 a checkpoint write failed after the storage's retries (the previous one is intact: run
again to resume); 1 anything else. Under Horovod every rank exits with the same status: a failure
found on one rank reaches the others at the next step boundary (pretrain/train/status.py), and
launch/*.sh pass the workers' status on.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from typing import Optional

from common.config import ConfigError, add_config_args, config_from_args
from common.log import setup_logging

log = logging.getLogger("pretrain.train")


def _ignore_sigterm() -> None:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:      # not the main thread (main() called by a harness): nothing to protect
        pass


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.train", description=__doc__.split("\n")[0])
    add_config_args(parser)
    args = parser.parse_args(argv)
    # A crash inside MXNet, Horovod or Gloo (SIGSEGV, SIGABRT) then prints every thread's Python
    # stack on stderr, so the log of a dead rank says where it was instead of only an exit code.
    try:
        faulthandler.enable()
    except (ValueError, OSError):  # stderr without a file descriptor (embedded or captured): go on without
        pass
    setup_logging()
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    setup_logging(getattr(logging, cfg.log.level.upper(), logging.INFO))

    from common.log import process_rank
    from pretrain.checkpoint import CheckpointWriteFailed
    from pretrain.engines import resolve_engine
    from pretrain.train.dist import init_dist
    from pretrain.train.status import PeerFailed, agreed, exit_status, user_errors
    from pretrain.train.trainer import StopRequested, TrainingDiverged, run

    # train.engine: auto -> mxnet | torch before Horovod starts (which Horovod module depends on it);
    # every rank probes its own machine, create_engine then checks that all ranks agree.
    try:
        resolve_engine(cfg, log_it=process_rank() == 0)
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    dist = init_dist(cfg.train.engine)
    setup_logging(getattr(logging, cfg.log.level.upper(), logging.INFO), rank=dist.rank)
    try:
        tr = run(cfg, dist)
    except (PeerFailed, TrainingDiverged, StopRequested, CheckpointWriteFailed, *user_errors()) as e:
        if isinstance(e, PeerFailed):
            log.error("%s", e)
        elif isinstance(e, TrainingDiverged):
            log.error("training diverged: %s", e)
        elif isinstance(e, StopRequested):
            log.warning("%s", e)
        elif isinstance(e, CheckpointWriteFailed):
            log.error("%s. The previous checkpoint is intact: run the same command again to resume from it "
                      "(exit 5: a storage failure that may pass)", e)
        else:
            log.error("%s: %s", type(e).__name__, e)
        if agreed(e) and dist.size > 1:
            # Every rank exits with this status. horovodrun SIGTERMs the remaining workers as soon as
            # the first one exits non-zero; ignored for these last moments, it cannot replace their
            # status with 143 (horovodrun SIGKILLs a worker still alive 5 s later).
            _ignore_sigterm()
        return exit_status(e)
    except Exception as e:
        if not (agreed(e) and dist.size > 1):
            raise                              # a bug: the traceback, exit 1
        log.exception("rank %d failed (every rank stops with exit 1)", dist.rank)
        _ignore_sigterm()
        return exit_status(e)
    log.info("done: step %d, %d tokens seen, %d skipped steps; outputs in %s", tr.step, tr.tokens_seen,
             tr.skipped, cfg.train.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
