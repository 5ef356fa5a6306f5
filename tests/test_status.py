"""pretrain/train/status.py: how ranks agree on an exit status, with 2 ranks simulated by threads whose
collectives meet at a barrier (the real thing under horovodrun is in tests/test_faults.py)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from common.errors import ConfigError
from pretrain.checkpoint import CheckpointWriteFailed
from pretrain.train.status import PeerFailed, StopRequested, TrainingDiverged, agree, agreed, exit_status


class ThreadDist:
    """Rank `rank` of `size` threads; allreduce_sum and broadcast_object meet at a barrier."""

    def __init__(self, rank: int, size: int, shared: dict):
        self.rank, self.size, self.shared = rank, size, shared

    def _exchange(self, value):
        s = self.shared
        with s["lock"]:
            s["values"][self.rank] = value
        s["barrier"].wait()
        got = dict(s["values"])
        s["barrier"].wait()
        return got

    def allreduce_sum(self, x):
        return sum(np.asarray(v, dtype=np.float64) for v in self._exchange(np.asarray(x)).values())

    def broadcast_object(self, obj, root=0):
        return self._exchange(obj)[root]


def _agree_all(errors: list, stops: list | None = None) -> list:
    """Run agree() on len(errors) thread-ranks; returns per rank the stop flag or the raised exception."""
    n = len(errors)
    shared = {"lock": threading.Lock(), "values": {}, "barrier": threading.Barrier(n)}
    out: list = [None] * n

    def rank(r: int) -> None:
        try:
            out[r] = agree(ThreadDist(r, n, shared), errors[r], stop=bool(stops and stops[r]))
        except Exception as e:   # noqa: BLE001 (the outcome under test)
            out[r] = e

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_statuses():
    assert exit_status(ConfigError("x")) == 2 and exit_status(TrainingDiverged("x")) == 3
    assert exit_status(StopRequested("x")) == 4 and exit_status(CheckpointWriteFailed("x")) == 5
    assert exit_status(RuntimeError("bug")) == 1 and exit_status(PeerFailed(5, "x")) == 5


def test_nothing_wrong_and_a_signal_on_one_rank():
    assert _agree_all([None, None]) == [False, False]
    assert _agree_all([None, None, None], stops=[False, True, False]) == [True, True, True]


def test_rank_0s_checkpoint_failure_stops_every_rank_with_5():
    own = CheckpointWriteFailed("checkpoint step_00000004 failed: cannot reach the endpoint")
    r0, r1, r2 = _agree_all([own, None, None])
    assert r0 is own and agreed(r0)
    for r in (r1, r2):
        assert isinstance(r, PeerFailed) and r.status == 5 and agreed(r)
        assert "rank 0 failed with exit status 5" in str(r) and "cannot reach the endpoint" in str(r)


def test_different_failures_at_one_boundary_give_the_highest_status():
    r0, r1, r2 = _agree_all([ConfigError("no shards here"), TrainingDiverged("nan"), TrainingDiverged("nan too")])
    assert isinstance(r0, PeerFailed) and r0.status == 3 and "rank 1 failed" in str(r0)   # the lowest rank with it
    assert isinstance(r1, TrainingDiverged) and isinstance(r2, TrainingDiverged)


def test_alone_the_own_error_is_raised():
    class Alone:
        rank, size = 0, 1
    with pytest.raises(ConfigError):
        agree(Alone(), ConfigError("bad"))
    assert agree(Alone(), None, stop=True) is True
