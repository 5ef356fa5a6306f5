"""Exit statuses of `python -m pretrain.train`, and how every rank comes to exit with the same one.

    0 done                         3 the loss diverged (NaN/Inf; the last good checkpoint is intact)
    1 anything else (a bug)        4 stopped by SIGTERM/SIGUSR1 after saving a checkpoint
    2 config/data/checkpoint problem (the message names the fix)
    5 a checkpoint write failed after the storage's retries (the previous checkpoint is intact)

Under Horovod a failure is usually found on one rank: only rank 0 writes checkpoints, a shard may be
unreadable on one host. If that rank simply raised, the others would die in their next collective
with a status of 1 and launchers would report whichever process exited first. Instead the loop calls
`agree(dist, error)` at each step boundary (and after each start-up phase): one allreduce of a few
flags, the same collective that already carries "a stop signal arrived", so every rank learns that
some rank failed and with which status. The failing rank raises its own exception; the others raise
`PeerFailed` carrying the same status and the failing rank's message. When ranks fail differently
at the same boundary the highest status wins (5 over 3 over 2 over 1).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

EXIT_OK, EXIT_OTHER, EXIT_USER, EXIT_DIVERGED, EXIT_STOPPED, EXIT_CHECKPOINT_WRITE = 0, 1, 2, 3, 4, 5
_N_STATUS = 6                   # statuses 0..5; flag vector: [stop, status 1, ..., status 5]


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/Inf without fp16 loss scaling to absorb it."""


class StopRequested(Exception):
    """SIGTERM/SIGUSR1 arrived (spot interruption, Slurm preemption): a checkpoint was saved, then we stop."""


class PeerFailed(RuntimeError):
    """Another rank failed at this step boundary; this rank stops with the same exit status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)


def user_errors() -> tuple[type, ...]:
    """Exception types whose message is the whole story for the user (exit 2, no traceback)."""
    from common.errors import ConfigError
    from corpus.errors import TokenizerError
    from corpus.shards.read import ShardsError
    from pretrain.checkpoint.reader import CheckpointError
    from pretrain.train.data import DataError
    errors: list[type] = [ConfigError, DataError, CheckpointError, ShardsError, TokenizerError]
    try:
        from pretrain.engines.mxnet.gpu import UnsupportedGPUError
        errors.append(UnsupportedGPUError)
    except ImportError:
        pass
    return tuple(errors)


def exit_status(exc: BaseException) -> int:
    """The process exit status for an exception that ended the run (see the module docstring)."""
    from pretrain.checkpoint.writer import CheckpointWriteFailed
    if isinstance(exc, PeerFailed):
        return exc.status
    if isinstance(exc, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(exc, StopRequested):
        return EXIT_STOPPED
    if isinstance(exc, CheckpointWriteFailed):     # before user_errors: it is a CheckpointError too
        return EXIT_CHECKPOINT_WRITE
    if isinstance(exc, user_errors()):
        return EXIT_USER
    return EXIT_OTHER


def agreed(exc: BaseException) -> bool:
    """Whether every rank raised at the same boundary (after `agree`), so collectives still line up."""
    return bool(getattr(exc, "_kogpt_agreed", False))


def mark_agreed(exc: BaseException) -> BaseException:
    exc._kogpt_agreed = True   # type: ignore[attr-defined]
    return exc


def agree(dist: Any, error: Optional[BaseException], stop: bool = False) -> bool:
    """Every rank calls this at the same point. Returns whether any rank asked to stop (a signal);
    raises when any rank passed an `error`: that rank its own exception, the others PeerFailed with
    the highest failing status and the message of the lowest rank that failed with it.

    Cost when nothing failed: one allreduce of 6 float64 (none when alone)."""
    status = exit_status(error) if error is not None else EXIT_OK
    flags = np.zeros(_N_STATUS)
    flags[0] = 1.0 if stop else 0.0
    if status:
        flags[status] = 1.0
    if dist.size > 1:
        flags = np.asarray(dist.allreduce_sum(flags))
    worst = max((s for s in range(1, _N_STATUS) if flags[s] > 0), default=EXIT_OK)
    if worst == EXIT_OK:
        return bool(flags[0] > 0)
    # Failure path only (rare): which rank failed with that status, then its message to everyone.
    first = 0
    message = ""
    if dist.size > 1:
        mine = np.zeros(dist.size)
        mine[dist.rank] = 1.0 if status == worst else 0.0
        first = int(np.flatnonzero(np.asarray(dist.allreduce_sum(mine)) > 0)[0])
        text = f"{type(error).__name__}: {error}" if status == worst else ""
        message = dist.broadcast_object(text, root=first)
    if status == worst:
        raise mark_agreed(error)
    raise mark_agreed(PeerFailed(worst, f"rank {first} failed with exit status {worst} ({message}); "
                                        f"rank {dist.rank} stops with the same status"))
