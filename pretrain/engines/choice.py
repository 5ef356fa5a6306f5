"""`train.engine: auto`: which engine a machine should train with, from facts probed without importing
either framework.

    choice = choose_engine("auto", probe_facts("auto"))    # EngineChoice(engine="mxnet", reason="...")

The rule (README, "Engines"): the MXNet engine where mxnet is installed and it can run on every GPU
this process sees (compute capability <= 8.6, MXNet 1.9.1's newest kernels), or where training runs
on the CPU; the torch engine otherwise (Hopper/Ada GPUs, or no mxnet). `choose_engine` is a pure
function of the facts, so each case is unit-tested without the hardware.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Optional

from common.errors import ConfigError
from pretrain.engines.mxnet.gpu import MAX_MXNET_CC

ENGINES = ("mxnet", "torch")


@dataclass(frozen=True)
class EngineFacts:
    """What the choice depends on. gpus: (name, (major, minor)) of each visible GPU."""

    mxnet_installed: bool
    torch_installed: bool
    device: str = "auto"                                       # train.device: auto | cpu | gpu
    gpus: tuple[tuple[str, tuple[int, int]], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class EngineChoice:
    engine: str          # "mxnet" | "torch"
    reason: str          # one line for the log
    requested: str       # what the config said: "auto", "mxnet" or "torch"


def probe_facts(device: str) -> EngineFacts:
    """Look at this machine: installed frameworks (find_spec, no import) and visible GPUs (libcuda or
    nvidia-smi; skipped when train.device is cpu, since no GPU will be used)."""
    from pretrain.engines.mxnet.gpu import visible_gpus
    gpus = () if device == "cpu" else tuple(visible_gpus())
    return EngineFacts(mxnet_installed=importlib.util.find_spec("mxnet") is not None,
                       torch_installed=importlib.util.find_spec("torch") is not None,
                       device=device, gpus=gpus)


def _cc(c: tuple[int, int]) -> str:
    return f"{c[0]}.{c[1]}"


def choose_engine(requested: str, facts: Optional[EngineFacts]) -> EngineChoice:
    """The engine for `train.engine` = requested (auto | mxnet | torch) on a machine with `facts`
    (needed only for auto).

    Explicit names are returned unchanged (the engines themselves report a missing framework or an
    unsupported GPU). Raises ConfigError when auto finds no framework that can run here."""
    if requested in ENGINES:
        return EngineChoice(requested, f"train.engine: {requested} in the config", requested)
    if requested != "auto":
        raise ConfigError(f"train.engine={requested!r}: use auto, mxnet or torch")
    assert facts is not None, "train.engine=auto needs the probed facts"
    on_cpu = facts.device == "cpu" or not facts.gpus
    where = ("train.device: cpu" if facts.device == "cpu" else "no GPU visible") if on_cpu else \
        ", ".join(f"{name} (compute capability {_cc(cc)})" for name, cc in facts.gpus)
    newer = [(name, cc) for name, cc in facts.gpus if cc > MAX_MXNET_CC] if not on_cpu else []
    if facts.mxnet_installed and not newer:
        return EngineChoice("mxnet", f"mxnet is installed and can run here ({where})", requested)
    if facts.torch_installed:
        if facts.mxnet_installed:
            name, cc = newer[0]
            why = (f"{name} has compute capability {_cc(cc)}, beyond MXNet 1.9.1's kernels "
                   f"(<= {_cc(MAX_MXNET_CC)})")
        else:
            why = f"mxnet is not installed ({where})"
        return EngineChoice("torch", why, requested)
    if facts.mxnet_installed:
        name, cc = newer[0]
        raise ConfigError(f"train.engine=auto: {name} (compute capability {_cc(cc)}) needs the torch engine "
                          "and torch is not installed: `pip install -e .[torch]` (a CUDA build of torch)")
    raise ConfigError("train.engine=auto: neither mxnet nor torch is installed: run `make install`, or "
                      "`pip install -e .[torch]` on a machine for the torch engine only")
