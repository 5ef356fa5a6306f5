"""Engines: the same GPT-2 in MXNet/Gluon (`mxnet`) and PyTorch (`torch`), behind `base.Engine`."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.schema import Config
    from pretrain.train.dist import Dist
    from pretrain.engines.base import Engine


def create_engine(cfg: "Config", dist: "Dist", vocab_size: int) -> "Engine":
    """Build the engine named by `train.engine`; imports only that framework."""
    if cfg.train.engine == "mxnet":
        from pretrain.engines.mxnet.engine import MXNetEngine
        return MXNetEngine(cfg, dist, vocab_size)
    if cfg.train.engine == "torch":
        from pretrain.engines.torch.engine import TorchEngine
        return TorchEngine(cfg, dist, vocab_size)
    raise ValueError(f"train.engine={cfg.train.engine!r}: use mxnet or torch")
