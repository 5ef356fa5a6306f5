"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty.

Engine-neutral (numpy), so both engines decode with exactly the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingConfig:
    greedy: bool = False
    temperature: float = 1.0       # > 0; lower is more conservative
    top_k: int = 0                 # keep the k most likely tokens; 0 = off
    top_p: float = 1.0             # keep the smallest set with probability mass >= p; 1.0 = off
    repetition_penalty: float = 1.0  # CTRL-style: divide positive logits (multiply negative) of seen tokens

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 (use --greedy for argmax)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty}: must be > 0")


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """logits (V,) float; seen: ids already in the sequence. Returns a penalized copy."""
    if penalty == 1.0 or seen.size == 0:
        return logits
    out = logits.copy()
    ids = np.unique(seen)
    vals = out[ids]
    out[ids] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def next_token(logits: np.ndarray, history: np.ndarray, cfg: SamplingConfig,
               rng: np.random.Generator, banned: np.ndarray | None = None) -> int:
    """Pick the next id from `logits` (V,) given the ids generated so far (`history`, 1-D).

    `banned` ids are never picked (e.g. <pad>, <mask>, <unused*>: tokens text never contains).
    """
    logits = apply_repetition_penalty(logits.astype(np.float64), history, cfg.repetition_penalty)
    if banned is not None and banned.size:
        logits = logits.copy()
        logits[banned] = -np.inf
    if cfg.greedy:
        return int(np.argmax(logits))
    logits = logits / cfg.temperature
    if cfg.top_k and cfg.top_k < logits.size:
        kth = np.partition(logits, -cfg.top_k)[-cfg.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if cfg.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cum, cfg.top_p) + 1)]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(probs.size, p=probs))
