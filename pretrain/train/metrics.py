"""Training metrics: FLOPs/MFU arithmetic, and the JSONL + TensorBoard writer (rank 0 only).

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOP/s / peak FLOP/s of the devices:
    FLOPs per token = 6 N + 12 L d T      (N parameters, L layers, d units, T context length)
    MFU = tokens/s x FLOPs per token / (peak FLOP/s per device x devices)
6N counts the forward (2N) and backward (4N) matmuls; 12 L d T the attention scores and weighted
sums, which do not scale with N. Peaks are dense (no sparsity) tensor-core figures for 16-bit
inputs; on CPU there is no meaningful single figure, so MFU is reported as "n/a".
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any, Optional

log = logging.getLogger("pretrain.metrics")

# device-name substring -> peak dense 16-bit FLOP/s per device (vendor data sheets)
PEAK_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12),      # Hopper, bf16/fp16 dense
    ("H100", 989e12),      # SXM bf16/fp16 dense
    ("A100", 312e12),
    ("A10G", 125e12),      # AWS g5, fp16 tensor
    ("L4", 121e12),
    ("V100", 125e12),
    ("T4", 65e12),
]


def peak_flops(device_name: str) -> Optional[float]:
    """Peak 16-bit FLOP/s of one device from its name, or None (CPU, unknown GPU)."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def flops_per_token(num_params: int, num_layers: int, units: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12 L d T."""
    return 6.0 * num_params + 12.0 * num_layers * units * seq_len


def mfu(tokens_per_s: float, fpt: float, device_name: str, devices: int) -> Optional[float]:
    """Fraction of peak (0..1) for the whole job, or None when the device's peak is unknown."""
    peak = peak_flops(device_name)
    if peak is None or devices <= 0:
        return None
    return tokens_per_s * fpt / (peak * devices)


def fmt_bytes(n: float) -> str:
    for unit, div in (("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n / 2 ** 10:.1f} KiB"


def _summary_writer_cls() -> type:
    """tensorboardX.SummaryWriter, imported without torch unless torch is already loaded.

    tensorboardX imports torch when it can, only to accept torch tensors (we log Python floats).
    In a process that already loaded horovod.mxnet, loading torch's libraries segfaults (horovod
    0.28.1, mxnet 1.9.1, torch 2.x: seen on rank 0 of `horovodrun -np 2`), so hide torch from it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None   # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter


class MetricsWriter:
    """Appends one JSON object per record to `<out_dir>/metrics.jsonl` and scalars to TensorBoard
    (`<out_dir>/tensorboard/`). On non-root ranks every call is a no-op."""

    def __init__(self, out_dir: str, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self._f = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "metrics.jsonl")
        partial = False                                       # a killed run may have left half a line
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as fb:
                fb.seek(-1, os.SEEK_END)
                partial = fb.read(1) != b"\n"
        self._f = open(self.path, "a", encoding="utf-8")      # append: a resumed run continues the file
        if partial:
            self._f.write("\n")
        if tensorboard:
            try:
                self._tb = _summary_writer_cls()(os.path.join(out_dir, "tensorboard"))
            except ImportError:  # optional dependency; the JSONL file has the same numbers
                log.warning("tensorboardX is not installed: writing metrics.jsonl only")

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One record: {"kind": kind, "step": step, **values}; numbers also go to TensorBoard as kind/key."""
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, **values}
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
