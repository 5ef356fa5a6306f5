"""The interface between the shared training loop and a framework engine.

Both engines implement the same GPT-2 (tensor names in docs/CONTRACTS.md) and this protocol; the
training loop, checkpointing, data order, schedule and metrics live once in the shared code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np


def tensor_shapes(units: int, num_layers: int, max_length: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Engine-neutral tensor name -> shape of a GPT-2 (docs/CONTRACTS.md); the optimizer state has
    `exp_avg.<name>` and `exp_avg_sq.<name>` of the same shapes."""
    U = units
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (vocab_size, U), "wpe.weight": (max_length, U)}
    for i in range(num_layers):
        h = f"h.{i}"
        shapes.update({f"{h}.ln_1.weight": (U,), f"{h}.ln_1.bias": (U,),
                       f"{h}.attn.qkv.weight": (3 * U, U), f"{h}.attn.qkv.bias": (3 * U,),
                       f"{h}.attn.proj.weight": (U, U), f"{h}.attn.proj.bias": (U,),
                       f"{h}.ln_2.weight": (U,), f"{h}.ln_2.bias": (U,),
                       f"{h}.mlp.fc.weight": (4 * U, U), f"{h}.mlp.fc.bias": (4 * U,),
                       f"{h}.mlp.proj.weight": (U, 4 * U), f"{h}.mlp.proj.bias": (U,)})
    shapes.update({"ln_f.weight": (U,), "ln_f.bias": (U,)})
    return shapes


@dataclass
class StepResult:
    loss: float          # mean token cross-entropy (nats) over the global batch, all workers
    grad_norm: float     # global L2 norm of the averaged gradient, before clipping
    skipped: bool        # True when the step was skipped (fp16 overflow: inf/nan gradients)
    loss_scale: float    # the dynamic loss scale after this step (1.0 when not scaling)


class Engine(Protocol):
    name: str            # "mxnet" | "torch"
    device_name: str     # e.g. "cpu", "NVIDIA H100 80GB HBM3"
    precision: str       # "fp32" | "fp16" | "bf16"
    num_params: int      # all trainable parameters (tied embedding counted once)

    def train_step(self, micro_batches: list[np.ndarray], lr: float) -> StepResult:
        """One optimizer step over this worker's micro-batches, each (micro_batch, seq_len + 1) int32.

        Accumulates gradients over the micro-batches, averages them across workers (Horovod),
        clips to `optim.clip_norm` by global norm, applies AdamW with learning rate `lr`.
        """

    def eval_loss(self, batch: np.ndarray) -> tuple[float, int]:
        """Sum of token cross-entropy (nats) and the token count for one (B, T+1) batch, no dropout.

        Local to this worker; the caller sums across workers.
        """

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """(B, T) int ids -> (B, T, V) float32 logits, eval mode (no dropout)."""

    def get_weights(self, out: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
        """fp32 weights under the engine-neutral names.

        `out`: host arrays of the right shapes from an earlier call, filled in place and returned
        (a checkpoint then costs a memcopy, not a fresh 0.5 GB allocation per save)."""

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load fp32 weights by engine-neutral name; raises on a missing/extra name or shape mismatch."""

    def get_optimizer_state(self, out: Optional[dict[str, np.ndarray]] = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(`exp_avg.<name>`/`exp_avg_sq.<name>` tensors, JSON-able scalars such as step and loss scale);
        `out` as for get_weights."""

    def set_optimizer_state(self, tensors: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        ...

    def get_rng_state(self) -> dict[str, Any]:
        """JSON-able RNG state (dropout) so a resumed run draws the same masks."""

    def set_rng_state(self, state: dict[str, Any]) -> None:
        ...

    def synchronize(self) -> None:
        """Wait until the device has finished the work queued so far (MXNet and CUDA run asynchronously)."""

    def memory_bytes(self) -> int:
        """Device memory in use (GPU) or process RSS (CPU), bytes."""
