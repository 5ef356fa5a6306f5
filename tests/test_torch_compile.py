"""The torch engine's GPU recipe run on the CPU: torch.compile (inductor + gcc), bf16 autocast, fused
AdamW, through the real trainer; gradients of the compiled path vs eager; a checkpoint of the compiled
bf16 run resumed in eager torch and in the MXNet engine; eval and generation on a compiled model.

What the CPU cannot run (flash-attention kernels, CUDA graphs, NCCL) is covered only by the GPU check
(README, "Tests"). Compile time dominates: the inductor cache lives in one temporary directory for the
whole module (shared with the trainer subprocesses), so each graph is compiled once per module.

Tolerances. fp32 compiled vs fp32 eager: the same math with other fusion and summation order, so
gradients agree to ~1e-6 relative (asserted: 1e-4). bf16 vs fp32: bf16 keeps 8 significant bits, so each
matmul input is rounded by up to 2^-9 = 0.2% relative; the loss is a mean over 64 tokens of fp32
log-softmax (autocast keeps softmax and the accumulations in fp32), so those roundings average out and
losses agree to well under 0.5% (asserted: rtol 5e-3, ~0.03 nats at the tiny model's ~6 nats), for the few
steps tested (differences grow with steps as weights drift apart).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from common.config import load_config                                     # noqa: E402
from tests.train_fixtures import make_run_inputs                          # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BF16_RTOL = 5e-3          # module docstring: why
FP32_RTOL = 1e-4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inductor_cache(tmp_path_factory):
    """One inductor/FX-graph cache for this module (here and in the trainer subprocesses): safe, since
    it is new and private to this test session, and it turns repeated compiles of a graph into loads."""
    d = tmp_path_factory.mktemp("inductor")
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_run_inputs(tmp_path_factory.mktemp("inputs"), n_docs=200)


def _sets(tok, shards, out: Path, root: Path, **kw) -> dict:
    base = {"tokenizer.dir": tok, "train.shards": shards, "train.out_dir": out, "checkpoint.root": root,
            "train.engine": "torch", "model.dropout": 0.0, "train.max_steps": 6, "train.eval_every": 2,
            "checkpoint.every_steps": 2, "checkpoint.keep_last": 3, "checkpoint.async_upload": "false",
            "log.tensorboard": "false"}
    base.update(kw)
    return base


def _train(sets: dict, inductor: Path) -> subprocess.CompletedProcess:
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO), TORCHINDUCTOR_CACHE_DIR=str(inductor))
    r = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "configs/tiny.yaml", *args], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def _metrics(out: Path, kind: str, key: str) -> dict[int, float]:
    got = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == kind:
            got[r["step"]] = r[key]
    return got


@pytest.fixture(scope="module")
def runs(inputs, inductor_cache, tmp_path_factory):
    """Eager fp32 for 6 steps (the reference); compiled + bf16 + fused AdamW stopped after 4 (checkpoint
    at 4); that checkpoint resumed to 6 in eager torch fp32 and in the MXNet engine."""
    tok, shards = inputs
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    out["eager"] = tmp / "eager"
    _train(_sets(tok, shards, out["eager"], out["eager"] / "ck", **{"train.compile": "false",
                                                                      "train.precision": "fp32"}), inductor_cache)
    out["compiled"] = tmp / "compiled"
    r = _train(_sets(tok, shards, out["compiled"], out["compiled"] / "ck", **{
        "train.compile": "true", "train.precision": "bf16", "optim.fused": "true", "train.stop_after": 4}),
        inductor_cache)
    assert "compile=per block, fused AdamW=True" in r.stderr and "cpu, bf16" in r.stderr
    for engine in ("torch", "mxnet"):
        if engine == "mxnet" and not importlib_has("mxnet"):
            continue
        d = tmp / f"resume_{engine}"
        shutil.copytree(out["compiled"] / "ck", d / "ck")
        r = _train(_sets(tok, shards, d, d / "ck", **{"train.engine": engine, "train.compile": "false",
                                                       "train.precision": "fp32"}), inductor_cache)
        assert f"resumed from {d / 'ck' / 'step_00000004'}" in r.stderr
        out[f"resume_{engine}"] = d
    return out


def importlib_has(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_compiled_bf16_fused_run_follows_eager_fp32(runs):
    ref = _metrics(runs["eager"], "train", "loss")
    got = _metrics(runs["compiled"], "train", "loss")
    assert sorted(got) == [1, 2, 3, 4] and sorted(ref) == list(range(1, 7))
    for s in got:
        assert got[s] == pytest.approx(ref[s], rel=BF16_RTOL), (s, got[s], ref[s])
    assert got != {s: ref[s] for s in got}            # bf16 did run: not bit-identical to fp32
    # eval on the compiled model (the compiled loss under no_grad, reduction sum)
    ev_ref, ev = _metrics(runs["eager"], "eval", "valid_loss"), _metrics(runs["compiled"], "eval", "valid_loss")
    assert sorted(ev) == [2, 4]
    for s in ev:
        assert ev[s] == pytest.approx(ev_ref[s], rel=BF16_RTOL)


def test_compiled_bf16_checkpoint_resumes_in_eager_torch_and_mxnet(runs):
    ref = _metrics(runs["eager"], "train", "loss")
    torch_resumed = _metrics(runs["resume_torch"], "train", "loss")
    assert sorted(torch_resumed)[-2:] == [5, 6]
    for s in (5, 6):
        assert torch_resumed[s] == pytest.approx(ref[s], rel=BF16_RTOL)
    state = json.loads((runs["compiled"] / "ck" / "step_00000004" / "state.json").read_text())
    assert state["engine"] == "torch" and state["config"]["train"]["precision"] == "bf16"
    if "resume_mxnet" not in runs:
        pytest.skip("mxnet is not installed")
    mx_resumed = _metrics(runs["resume_mxnet"], "train", "loss")
    for s in (5, 6):       # same weights, optimizer state and batches, both fp32: only float noise
        assert mx_resumed[s] == pytest.approx(torch_resumed[s], rel=FP32_RTOL)


def _engine(tok, shards, out: Path, **kw):
    from pretrain.engines.torch.engine import TorchEngine
    from pretrain.train.dist import Dist
    from corpus.tokenizer import Tokenizer
    sets = _sets(tok, shards, out, out / "ck", **kw)
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"{k}={v}" for k, v in sets.items()])
    return TorchEngine(cfg, Dist(), Tokenizer.load(tok).vocab_size), cfg


@pytest.mark.parametrize("scope,chunk_rows", [("block", 0), ("block", 16), ("model", 0)])
def test_compiled_gradients_equal_eager(inputs, inductor_cache, tmp_path, scope, chunk_rows):
    """fp32, no dropout: the compiled loss (per block or whole model; full or chunked cross-entropy)
    gives eager's loss and gradients."""
    tok, shards = inputs
    eng, cfg = _engine(tok, shards, tmp_path, **{"train.compile": "true", "train.compile_scope": scope,
                                                 "train.precision": "fp32"})
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, eng.vocab_size, (2, 33)).astype(np.int64))

    def grads(fn):
        eng.model.zero_grad(set_to_none=True)
        loss = fn(x[:, :-1], x[:, 1:], chunk_rows=chunk_rows)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in eng.model.named_parameters()}

    from torch._dynamo.utils import counters
    l_eager, g_eager = grads(eng.model.loss)
    graphs = counters["stats"]["unique_graphs"]
    l_comp, g_comp = grads(eng._loss)
    assert eng.compiled and l_comp == pytest.approx(l_eager, rel=1e-6)
    # per block: the 2 blocks share one graph (parameters are graph inputs), plus the head's: at most 2
    # new graphs, not 3 (fewer when an earlier test in this process captured the block already)
    assert counters["stats"]["unique_graphs"] - graphs <= (2 if scope == "block" else 1)
    assert set(g_comp) == set(g_eager)
    for n in g_eager:
        err = float((g_comp[n] - g_eager[n]).norm() / (g_eager[n].norm() + 1e-12))
        assert err < FP32_RTOL, (n, err)


def test_eval_and_generation_on_a_compiled_model(inputs, inductor_cache, runs, tmp_path):
    """A compiled bf16 engine loaded from the compiled run's checkpoint: its eval loss is the eager
    model's, and greedy generation through its (compiled) model gives the eager model's tokens."""
    from corpus.tokenizer import Tokenizer
    from pretrain.checkpoint import load_checkpoint
    from pretrain.generate.cli import generate_ids
    from pretrain.generate.inference import LoadedModel, build_inference_model, model_config_from_state
    from pretrain.generate.sampling import SamplingConfig

    tok, shards = inputs
    ck = load_checkpoint(str(runs["compiled"] / "ck"))
    eng, cfg = _engine(tok, shards, tmp_path, **{"train.compile": "true", "train.precision": "bf16"})
    eng.set_weights(ck.weights)
    batch = np.random.default_rng(1).integers(0, eng.vocab_size, (2, 33)).astype(np.int32)
    s_comp, n = eng.eval_loss(batch)
    mcfg = model_config_from_state(ck.state, ck.location)
    eager, dev = build_inference_model("torch", ck.weights, mcfg, eng.vocab_size)
    with torch.no_grad():
        x = torch.from_numpy(batch.astype(np.int64))
        s_eager = float(eager.loss(x[:, :-1], x[:, 1:], reduction="sum"))
    assert n == 64 and s_comp == pytest.approx(s_eager, rel=BF16_RTOL)

    tokenizer = Tokenizer.load(tok)
    prompt = [tokenizer.bos_id] + tokenizer.encode("오늘 나는")
    greedy = SamplingConfig(greedy=True)
    outs = []
    for model in (eng.model.eval(), eager):
        lm = LoadedModel("torch", model, tokenizer, mcfg, ck.location, ck.step, dev)
        outs.append(generate_ids(lm, prompt, 12, greedy, stop_at_eos=False))
    assert len(outs[0]) == 12 and outs[0] == outs[1]
