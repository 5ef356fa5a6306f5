"""Learning-rate schedule: linear warmup, then cosine, linear or constant decay to `optim.min_lr`.

`lr_at(step, optim, max_steps)` is the rate for optimizer step `step` (0-based: the first update uses
step 0), so warmup reaches the peak `optim.lr` at step `warmup_steps - 1` and the decay ends at
`min_lr` on the last step `max_steps - 1`. A pure function of the step: resuming needs no state.
"""
from __future__ import annotations

import math

from common.schema import OptimConfig


def lr_at(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate (per unit gradient) for 0-based optimizer step `step`."""
    peak, floor, warm = optim.lr, optim.min_lr, optim.warmup_steps
    if step < warm:
        return peak * (step + 1) / warm
    if optim.schedule == "constant":
        return peak
    span = max(1, max_steps - 1 - warm)
    progress = min(1.0, max(0.0, (step - warm) / span))
    if optim.schedule == "cosine":
        return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
    if optim.schedule == "linear":
        return peak - (peak - floor) * progress
    raise ValueError(f"optim.schedule={optim.schedule!r}: use cosine, linear or constant")
