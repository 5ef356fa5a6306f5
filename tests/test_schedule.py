"""Warmup then cosine/linear/constant decay to min_lr."""
import math

import pytest

from common.schema import OptimConfig
from pretrain.train.schedule import lr_at


def _cfg(schedule, warm=10):
    return OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=warm, schedule=schedule)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_is_linear_to_peak(schedule):
    c = _cfg(schedule)
    assert [lr_at(s, c, 100) for s in range(10)] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(10)])
    assert lr_at(10, c, 100) == pytest.approx(1e-3)


def test_cosine_reaches_min_lr_on_the_last_step_and_halfway_is_the_mean():
    c = _cfg("cosine")
    assert lr_at(99, c, 100) == pytest.approx(1e-4)
    mid = 10 + (99 - 10) / 2
    assert lr_at(int(mid), c, 100) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))
    lrs = [lr_at(s, c, 100) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))                # monotone decay
    assert lr_at(500, c, 100) == pytest.approx(1e-4)                 # past the end: stays at the floor


def test_linear_and_constant():
    lin, const = _cfg("linear"), _cfg("constant")
    assert lr_at(99, lin, 100) == pytest.approx(1e-4)
    assert lr_at(10 + 89 // 2, lin, 100) == pytest.approx(1e-3 - 9e-4 * (44 / 89))
    assert lr_at(99, const, 100) == pytest.approx(1e-3)


def test_no_warmup_starts_at_peak():
    assert lr_at(0, _cfg("cosine", warm=0), 100) == pytest.approx(1e-3)
