"""`train.engine: auto`: the choice as a function of the probed facts (every case), the ranks' agreement
check, and a real run whose config and checkpoint record the resolved engine, never "auto"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from pretrain.engines import check_ranks_agree, resolve_engine
from pretrain.engines.choice import EngineFacts, choose_engine

REPO = Path(__file__).resolve().parents[1]
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0))
A10G = ("NVIDIA A10G", (8, 6))
L4 = ("NVIDIA L4", (8, 9))
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


@pytest.mark.parametrize("mxnet,torch,device,gpus,want,reason", [
    # CPU (no GPU, or train.device: cpu): mxnet when installed
    (True, True, "auto", (), "mxnet", "no GPU visible"),
    (True, False, "cpu", (), "mxnet", "train.device: cpu"),
    (True, True, "cpu", (H100,), "mxnet", "train.device: cpu"),     # the H100 is not used
    (False, True, "auto", (), "torch", "mxnet is not installed"),
    # GPUs MXNet 1.9.1 has kernels for (<= 8.6): mxnet
    (True, True, "auto", (A100,) * 8, "mxnet", "A100"),
    (True, True, "gpu", (A10G,), "mxnet", "compute capability 8.6"),
    # one GPU beyond 8.6 is enough to need torch
    (True, True, "auto", (H100,) * 8, "torch", "H100 80GB HBM3 has compute capability 9.0, beyond MXNet"),
    (True, True, "auto", (A100, L4), "torch", "L4 has compute capability 8.9"),
    (False, True, "gpu", (A100,), "torch", "mxnet is not installed"),
])
def test_auto_choice_by_facts(mxnet, torch, device, gpus, want, reason):
    c = choose_engine("auto", EngineFacts(mxnet, torch, device, gpus))
    assert (c.engine, c.requested) == (want, "auto")
    assert reason in c.reason


def test_auto_with_no_usable_framework_says_what_to_install():
    with pytest.raises(ConfigError, match=r"H100.*needs the torch engine.*pip install -e \.\[torch\]"):
        choose_engine("auto", EngineFacts(True, False, "auto", (H100,)))
    with pytest.raises(ConfigError, match="neither mxnet nor torch is installed"):
        choose_engine("auto", EngineFacts(False, False, "auto", ()))


@pytest.mark.parametrize("name", ["mxnet", "torch"])
def test_explicit_engine_is_kept_whatever_the_machine(name):
    assert choose_engine(name, EngineFacts(False, False, "auto", (H100,))).engine == name
    assert choose_engine(name, None).engine == name


def test_resolve_sets_the_config_and_logs_once(caplog):
    from common.schema import Config
    cfg = Config()
    assert cfg.train.engine == "auto"                 # the schema's default, as base.yaml's and demo.yaml's
    with caplog.at_level("INFO", logger="pretrain.engines"):
        c = resolve_engine(cfg, EngineFacts(True, True, "auto", (H100,)))
        resolve_engine(cfg, EngineFacts(True, True, "auto", (H100,)), log_it=True)   # already resolved: silent
    assert cfg.train.engine == c.engine == "torch"
    lines = [r.getMessage() for r in caplog.records if "train.engine=auto" in r.getMessage()]
    assert lines == ["train.engine=auto -> torch: NVIDIA H100 80GB HBM3 has compute capability 9.0, beyond "
                     "MXNet 1.9.1's kernels (<= 8.6)"]
    cfg2 = Config()
    resolve_engine(cfg2, EngineFacts(True, True, "auto", ()), log_it=False)   # ranks other than 0
    assert cfg2.train.engine == "mxnet"


class _FakeDist:
    """Two ranks whose engines sum as given (what Dist.allreduce_sum would return)."""

    def __init__(self, total: float, size: int = 2):
        self.total, self.size, self.rank = total, size, 0

    def allreduce_sum(self, x):
        return self.total


def test_ranks_must_agree():
    check_ranks_agree("torch", _FakeDist(2.0))
    check_ranks_agree("mxnet", _FakeDist(0.0))
    with pytest.raises(ConfigError, match="ranks disagree on train.engine: 1 of 2 chose torch.*explicitly"):
        check_ranks_agree("torch", _FakeDist(1.0))


def test_configs_default_to_auto():
    from common.config import load_config
    for name in ("base", "demo"):
        assert load_config(REPO / "configs" / f"{name}.yaml").train.engine == "auto"


@pytest.mark.slow
def test_run_with_auto_records_the_resolved_engine(tmp_path):
    """The real trainer with train.engine=auto: the choice is logged once, and config.yaml and the
    checkpoint's state.json name the engine that ran."""
    from tests.train_fixtures import make_run_inputs
    from pretrain.engines.choice import probe_facts

    want = choose_engine("auto", probe_facts("cpu")).engine
    tok, shards = make_run_inputs(tmp_path / "in", n_docs=120)
    out = tmp_path / "run"
    sets = {"tokenizer.dir": tok, "train.shards": shards, "train.out_dir": out, "checkpoint.root": out / "ck",
            "train.engine": "auto", "train.max_steps": 2, "train.eval_every": 0, "log.tensorboard": "false",
            "checkpoint.async_upload": "false"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    r = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "configs/tiny.yaml", *args], cwd=REPO,
                       env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("train.engine=auto -> ") == 1 and f"train.engine=auto -> {want}: " in r.stderr
    state = json.loads((out / "ck" / "step_00000002" / "state.json").read_text())
    assert state["engine"] == want and state["config"]["train"]["engine"] == want
    assert f"engine: {want}" in (out / "config.yaml").read_text()
