"""Engines: the same GPT-2 in MXNet/Gluon (`mxnet`) and PyTorch (`torch`), behind `base.Engine`.

`resolve_engine(cfg)` turns `train.engine: auto` into a concrete name (rule in `choice`), before
Horovod starts (which Horovod module to load depends on it); `create_engine` builds it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from common.schema import Config
    from pretrain.engines.base import Engine
    from pretrain.engines.choice import EngineChoice, EngineFacts
    from pretrain.train.dist import Dist

log = logging.getLogger("pretrain.engines")


def resolve_engine(cfg: "Config", facts: Optional["EngineFacts"] = None, log_it: bool = True) -> "EngineChoice":
    """Set `cfg.train.engine` to the engine this machine trains with (unchanged unless `auto`) and
    return the choice; logs it when it was auto and `log_it` (pass rank == 0). The resolved name is
    what config.yaml and the checkpoints' state.json record."""
    from pretrain.engines.choice import choose_engine, probe_facts
    requested = cfg.train.engine
    if requested == "auto" and facts is None:
        facts = probe_facts(cfg.train.device)
    choice = choose_engine(requested, facts)
    cfg.train.engine = choice.engine
    if requested == "auto" and log_it:
        log.info("train.engine=auto -> %s: %s", choice.engine, choice.reason)
    return choice


def check_ranks_agree(engine: str, dist: "Dist") -> None:
    """Every rank must train with the same engine (an auto choice on mixed nodes could differ)."""
    from common.errors import ConfigError
    if getattr(dist, "size", 1) <= 1:
        return
    n_torch = int(round(float(dist.allreduce_sum(1.0 if engine == "torch" else 0.0))))
    if n_torch not in (0, dist.size):
        raise ConfigError(f"ranks disagree on train.engine: {n_torch} of {dist.size} chose torch, the rest mxnet "
                          "(train.engine=auto on nodes with different GPUs or installs): set train.engine: mxnet "
                          "or torch explicitly")


def create_engine(cfg: "Config", dist: "Dist", vocab_size: int) -> "Engine":
    """Build the engine named by `train.engine` (auto resolved first); imports only that framework."""
    if cfg.train.engine == "auto":
        resolve_engine(cfg, log_it=getattr(dist, "rank", 0) == 0)
    check_ranks_agree(cfg.train.engine, dist)
    if cfg.train.engine == "mxnet":
        from pretrain.engines.mxnet.engine import MXNetEngine
        return MXNetEngine(cfg, dist, vocab_size)
    if cfg.train.engine == "torch":
        from pretrain.engines.torch.engine import TorchEngine
        return TorchEngine(cfg, dist, vocab_size)
    raise ValueError(f"train.engine={cfg.train.engine!r}: use auto, mxnet or torch")
