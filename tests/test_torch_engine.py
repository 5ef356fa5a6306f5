"""The PyTorch engine: same model as the MXNet engine, Engine protocol, exact resume, HF export."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from common.schema import Config, ModelConfig                               # noqa: E402
from horovod_output import explain, retry_native_crash                      # noqa: E402
from pretrain.train.dist import Dist                                              # noqa: E402
from pretrain.engines.torch.engine import TorchEngine, decays               # noqa: E402
from pretrain.engines.torch.model import GPT2, GPT2Shape, chunked_cross_entropy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
V = 97   # a vocabulary that is not a power of two


def tiny_cfg(dropout: float = 0.0, micro: int = 2, glob: int = 4, engine: str = "torch", pad: int = 64) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(preset="tiny", dropout=dropout)      # 2 layers, 64 units, 4 heads, 64 positions
    cfg.train.engine, cfg.train.device = engine, "cpu"
    cfg.train.pad_vocab_multiple = pad                           # V = 120 -> 128 rows in wte unless 0
    cfg.train.micro_batch, cfg.train.global_batch = micro, glob
    cfg.optim.weight_decay = 0.1                                 # exercised, so a wrong decay set shows
    return cfg


def batches(n: int, b: int = 2, t: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, (b, t + 1)).astype(np.int32) for _ in range(n)]


def contract_names(layers: int) -> list[str]:
    names = ["wte.weight", "wpe.weight"]
    for i in range(layers):
        names += [f"h.{i}.{p}" for p in ("ln_1.weight", "ln_1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                         "attn.proj.weight", "attn.proj.bias", "ln_2.weight", "ln_2.bias",
                                         "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias")]
    return names + ["ln_f.weight", "ln_f.bias"]


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()) for k in a)


# ----------------------------------------------------------------------------------------------------
# the model


def test_state_dict_keys_are_the_contract_names_and_init():
    torch.manual_seed(0)
    m = GPT2(GPT2Shape(vocab_size=V, num_layers=3, units=32, num_heads=4, max_length=16))
    sd = m.state_dict()
    assert list(sd) == contract_names(3)                      # tied head: no separate key
    assert tuple(sd["h.0.attn.qkv.weight"].shape) == (96, 32) and tuple(sd["h.1.mlp.proj.weight"].shape) == (32, 128)
    assert m.num_params() == sum(v.numel() for v in sd.values())
    assert float(sd["h.2.ln_2.weight"].min()) == 1.0 and float(sd["h.0.mlp.fc.bias"].abs().max()) == 0.0
    assert sd["h.0.attn.proj.weight"].std() < 0.6 * sd["h.0.attn.qkv.weight"].std()   # 0.02 / sqrt(2L)
    assert {n for n in sd if decays(n)} == {n for n in sd if n == "wte.weight" or (sd[n].dim() == 2 and n != "wpe.weight")}


def test_chunked_cross_entropy_equals_full():
    torch.manual_seed(1)
    m = GPT2(GPT2Shape(vocab_size=V, num_layers=2, units=32, num_heads=4, max_length=32, dropout=0.0))
    ids, tgt = torch.randint(0, V, (3, 20)), torch.randint(0, V, (3, 20))
    grads = []
    for rows in (0, 7):
        m.zero_grad()
        loss = m.loss(ids, tgt, chunk_rows=rows)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    assert abs(grads[0][0] - grads[1][0]) < 1e-5
    assert max(float((grads[0][1][n] - grads[1][1][n]).abs().max()) for n in grads[0][1]) < 1e-6
    x, w, t = torch.randn(10, 8), torch.randn(V, 8), torch.randint(0, V, (10,))
    assert torch.allclose(chunked_cross_entropy(x, w, t, 3, "sum"), torch.nn.functional.cross_entropy(x @ w.T, t, reduction="sum"), atol=1e-4)


def test_cached_decoding_equals_uncached():
    torch.manual_seed(2)
    m = GPT2(GPT2Shape(vocab_size=V, num_layers=2, units=32, num_heads=4, max_length=40, dropout=0.1)).eval()
    prompt = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        seq, out_plain = prompt, []
        for _ in range(12):
            nxt = m(seq)[0][:, -1].argmax(-1, keepdim=True)
            out_plain.append(nxt)
            seq = torch.cat([seq, nxt], 1)
        logits, past = m(prompt)
        out_cached, full = [], seq
        for i in range(12):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out_cached.append(nxt)
            logits, past = m(nxt, past=past)
        # a multi-token step on top of a cache (bottom-right aligned causal mask)
        l_full, _ = m(full)
        l_a, p_a = m(full[:, :9])
        l_b, _ = m(full[:, 9:], past=p_a)
    assert torch.equal(torch.cat(out_plain, 1), torch.cat(out_cached, 1))
    assert float((torch.cat([l_a, l_b], 1) - l_full).abs().max()) < 1e-5
    assert past[0][0].shape == (2, 4, 17, 8)


def test_logits_match_mxnet_model():
    """Same weights -> same logits in both engines (CPU fp32, dropout off): max |diff| <= 1e-4."""
    pytest.importorskip("mxnet")
    if importlib.util.find_spec("pretrain.engines.mxnet.model") is None:
        pytest.skip("the MXNet model file has not landed")
    import mxnet as mx
    from pretrain.engines.mxnet.model import build_model, init_gpt2, param_map

    mcfg = dataclasses.replace(ModelConfig(preset="tiny"), dropout=0.0)
    mx.random.seed(3)
    mxm = build_model(mcfg, V)
    init_gpt2(mxm)
    weights = {n: p.data().asnumpy() for n, p in param_map(mxm).items()}
    tm = GPT2(GPT2Shape.from_config(mcfg, V)).eval()
    tm.load_state_dict({n: torch.from_numpy(w) for n, w in weights.items()})
    ids = np.random.default_rng(4).integers(0, V, (3, 64))
    a = mxm(mx.nd.array(ids, dtype="int32"))[0].asnumpy()
    with torch.no_grad():
        b = tm(torch.from_numpy(ids))[0].numpy()
    assert a.shape == b.shape == (3, 64, V)
    assert float(np.abs(a - b).max()) <= 1e-4


# ----------------------------------------------------------------------------------------------------
# the engine


def test_train_step_learns_and_accumulation_equals_big_batch():
    e = TorchEngine(tiny_cfg(), Dist(), V)
    assert (e.name, e.device_name, e.precision, e.num_params) == ("torch", "cpu", "fp32", e.model.num_params())
    data = batches(2, b=2)
    losses = [e.train_step(data, 3e-3) for _ in range(8)]
    assert losses[-1].loss < losses[0].loss - 0.5 and all(r.grad_norm > 0 and not r.skipped for r in losses)
    s, n = e.eval_loss(data[0])
    logits = e.logits(data[0][:, :-1]).astype(np.float64)                      # (2, 16, V)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(logp, data[0][:, 1:, None].astype(np.int64), -1).sum()
    assert n == 2 * 16 and abs(s - nll) < 1e-3 and e.memory_bytes() > 0

    # two micro-batches of 2 == one micro-batch of 4 (engine built with micro 4, global 4); unpadded,
    # as padding changes the matmul shapes, whose rounding Adam's first step amplifies (~4e-6)
    a, b = TorchEngine(tiny_cfg(pad=0), Dist(), V), TorchEngine(tiny_cfg(micro=4, pad=0), Dist(), V)
    b.set_weights(a.get_weights())
    ra, rb = a.train_step(data, 1e-3), b.train_step([np.concatenate(data)], 1e-3)
    assert abs(ra.loss - rb.loss) < 1e-5 and abs(ra.grad_norm - rb.grad_norm) < 1e-5
    assert max_diff(a.get_weights(), b.get_weights()) < 1e-6


def test_clipping_scales_the_update_and_decay_groups():
    """With eps=100 AdamW's first update is ~lr*g/100, so clipping shows in the step."""
    deltas = {}
    for clip in (0.0, 1e-3):
        cfg = tiny_cfg()
        cfg.optim.clip_norm, cfg.optim.eps, cfg.optim.weight_decay = clip, 100.0, 0.0
        e = TorchEngine(cfg, Dist(), V)
        w0 = e.get_weights()
        r = e.train_step(batches(2), 1e-2)
        w1 = e.get_weights()
        deltas[clip] = np.sqrt(sum(float(((w1[k] - w0[k]).astype(np.float64) ** 2).sum()) for k in w0))
    assert r.grad_norm > 1e-3                       # reported before clipping
    assert deltas[1e-3] / deltas[0.0] == pytest.approx(1e-3 / r.grad_norm, rel=0.05)
    e = TorchEngine(tiny_cfg(), Dist(), V)
    groups = {id(p): g["weight_decay"] for g in e.opt.param_groups for p in g["params"]}
    assert all(groups[id(p)] == (0.1 if decays(n) else 0.0) for n, p in e.params.items())


def test_exact_resume_through_weights_optimizer_and_rng_state():
    """Steps 1-3 in one engine == step 1, state out, new engine, state in, steps 2-3 (dropout on)."""
    data = [batches(2, seed=s) for s in range(3)]
    a = TorchEngine(tiny_cfg(dropout=0.1), Dist(), V)
    a.train_step(data[0], 1e-3)
    saved = (a.get_weights(), a.get_optimizer_state(), a.get_rng_state())
    ra = [a.train_step(d, 1e-3) for d in data[1:]]

    b = TorchEngine(tiny_cfg(dropout=0.1), Dist(), V)
    b.train_step(data[2], 5e-3)                     # b's own history must not leak into the resume
    b.set_weights(saved[0])
    b.set_optimizer_state(*saved[1])
    b.set_rng_state(saved[2])
    rb = [b.train_step(d, 1e-3) for d in data[1:]]
    assert [r.loss for r in ra] == [r.loss for r in rb]
    assert max_diff(a.get_weights(), b.get_weights()) == 0.0
    assert max_diff(a.get_optimizer_state()[0], b.get_optimizer_state()[0]) == 0.0
    assert a.get_optimizer_state()[1] == {"step": 3}

    with pytest.raises(ValueError, match="missing"):
        b.set_weights({k: v for k, v in saved[0].items() if k != "ln_f.bias"})
    bad = dict(saved[0], **{"wpe.weight": np.zeros((3, 64), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        b.set_weights(bad)


def _mxnet_engine_or_skip():
    pytest.importorskip("mxnet")
    if importlib.util.find_spec("pretrain.engines.mxnet.engine") is None:
        pytest.skip("the MXNet engine has not landed")
    from pretrain.engines import create_engine
    return create_engine


@pytest.mark.parametrize("first", ["torch", "mxnet"])
def test_checkpoint_state_resumes_in_the_other_engine(first):
    """Train 2 steps in one engine, move weights + optimizer state to the other, take step 3 in both:
    the same weights come out (dropout off, CPU fp32), so a checkpoint resumes across engines."""
    create_engine = _mxnet_engine_or_skip()
    second = "mxnet" if first == "torch" else "torch"
    data = [batches(2, seed=s) for s in range(3)]
    src = create_engine(tiny_cfg(engine=first), Dist(), V)
    for d in data[:2]:
        src.train_step(d, 1e-3)
    dst = create_engine(tiny_cfg(engine=second), Dist(), V)
    tensors, scalars = src.get_optimizer_state()
    dst.set_weights(src.get_weights())
    dst.set_optimizer_state(tensors, scalars)
    dst.set_rng_state(src.get_rng_state())
    assert max_diff(src.get_optimizer_state()[0], dst.get_optimizer_state()[0]) < 1e-7
    r1, r2 = src.train_step(data[2], 1e-3), dst.train_step(data[2], 1e-3)
    assert abs(r1.loss - r2.loss) < 1e-4 and abs(r1.grad_norm - r2.grad_norm) < 1e-3 * max(1.0, r1.grad_norm)
    assert max_diff(src.get_weights(), dst.get_weights()) < 1e-5


@pytest.mark.slow
def test_horovod_two_workers_equal_one_worker_with_accumulation(tmp_path):
    """horovodrun -np 2 (2 micro-batches each) gives the single-process (4 micro-batches) weights."""
    if not (REPO / ".venv/bin/horovodrun").exists() and importlib.util.find_spec("horovod") is None:
        pytest.skip("horovod is not installed")
    script = tmp_path / "w.py"
    script.write_text(f"""
import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
import numpy as np
from test_torch_engine import tiny_cfg, batches, V
from pretrain.train.dist import init_dist
from pretrain.engines.torch.engine import TorchEngine
d = init_dist("torch")
e = TorchEngine(tiny_cfg(micro=2, glob=8), d, V)
data = batches(4, seed=5)
for _ in range(2):
    r = e.train_step(data[2 * d.rank: 2 * d.rank + 2], 1e-3)
np.savez({str(tmp_path)!r} + f"/w{{d.rank}}.npz", loss=r.loss, norm=r.grad_norm, **e.get_weights())
""")
    hvdrun = REPO / ".venv/bin/horovodrun"
    cmd = [str(hvdrun) if hvdrun.exists() else "horovodrun", "-np", "2", "--gloo", sys.executable, str(script)]
    proc = retry_native_crash(lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                                     env=dict(os.environ, PYTHONPATH=str(REPO))))
    assert proc.returncode == 0, explain(proc)
    w0, w1 = dict(np.load(tmp_path / "w0.npz")), dict(np.load(tmp_path / "w1.npz"))
    single = TorchEngine(tiny_cfg(micro=2, glob=8), Dist(), V)
    data = batches(4, seed=5)
    for _ in range(2):
        r = single.train_step(data, 1e-3)
    assert float(w0["loss"]) == pytest.approx(r.loss, abs=1e-5) and float(w0["norm"]) == pytest.approx(r.grad_norm, rel=1e-5)
    w = single.get_weights()
    assert max_diff({k: w0[k] for k in w}, {k: w1[k] for k in w}) == 0.0      # ranks agree exactly
    assert max_diff({k: w0[k] for k in w}, w) < 1e-5


# ----------------------------------------------------------------------------------------------------
# Hugging Face export / import


def test_export_to_transformers_and_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    sys.path.insert(0, str(REPO / "tests"))
    from train_fixtures import make_tokenizer, synthetic_docs

    from pretrain.checkpoint import load_checkpoint, write_checkpoint
    from pretrain.export import import_hf, main as export_main

    docs = synthetic_docs(200, seed=1) + ["  두 칸  공백, 줄\n바꿈\t탭 😀 漢字 abc 123 끝"]
    tok = make_tokenizer(tmp_path / "tok", docs, vocab_size=400)
    cfg = tiny_cfg()
    cfg.model = ModelConfig(preset="tiny", num_heads=2)          # head count is not derivable from shapes
    e = TorchEngine(cfg, Dist(), tok.vocab_size)
    e.train_step(batches(2), 1e-2)
    weights = e.get_weights()
    opt, scalars = e.get_optimizer_state()
    state = {"step": 1, "engine": "torch", "tokenizer_sha256": tok.sha256,
             "model": dict(dataclasses.asdict(cfg.model), vocab_size=tok.vocab_size), "optimizer": scalars}
    write_checkpoint(str(tmp_path / "ckpt" / "step_00000001"), weights, opt, state, str(tmp_path / "tok"))

    out = tmp_path / "hf"
    assert export_main(["--checkpoint", str(tmp_path / "ckpt"), "--to", "hf", str(out)]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    assert hf.config.activation_function == "gelu" and hf.config.n_head == 2
    assert (hf.config.bos_token_id, hf.config.eos_token_id, hf.config.pad_token_id) == (1, 2, 3)
    ids = np.random.default_rng(6).integers(0, tok.vocab_size, (2, 64))
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).logits.numpy()
    ours = e.logits(ids)
    assert float(np.abs(theirs - ours).max()) <= 1e-4

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok.eos_token == "</s>" and hf_tok.pad_token_id == 3
    for text in docs[:20] + docs[-1:] + [" 앞 공백", "끝 공백  ", "", "\n끝", "<mask> 토큰 <unused0>끝"]:
        assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text), text
        assert hf_tok.encode(text) == [tok.bos_id] + tok.encode(text), text      # the convention: <s> first
        assert hf_tok.decode(tok.encode(text)) == tok.decode(tok.encode(text)), text
    assert (out / "spm.model").read_bytes() == (tmp_path / "tok" / "spm.model").read_bytes()

    back = import_hf(str(out), str(tmp_path / "imported" / "step_00000000"))
    ck2 = load_checkpoint(back)
    assert max_diff(ck2.weights, weights) == 0.0
    assert ck2.state["tokenizer_sha256"] == tok.sha256 and ck2.state["model"]["num_heads"] == 2
    assert set(ck2.optimizer) == set(opt) and ck2.state["step"] == 0


def test_state_copies_into_reused_host_buffers():
    """Checkpoint snapshots fill the previous save's arrays in place, with the current values."""
    e = TorchEngine(tiny_cfg(), Dist(), V)
    e.train_step(batches(2, seed=0), 1e-3)
    host = dict(e.get_weights())
    host.update(e.get_optimizer_state()[0])
    e.train_step(batches(2, seed=1), 1e-3)
    w, (t, _) = e.get_weights(out=host), e.get_optimizer_state(out=host)
    assert all(w[n] is host[n] for n in w) and all(t[k] is host[k] for k in t)
    assert max_diff(w, e.get_weights()) == 0.0 and max_diff(t, e.get_optimizer_state()[0]) == 0.0


def test_padded_vocab_is_invisible_outside_the_engine():
    """wte padded to 128 rows (V = 120): state in and out has V rows, padded rows stay zero, and
    losses, logits and weights follow the unpadded engine to fp32 rounding, eager and chunked CE."""
    for chunk in (0, 8):
        plain = TorchEngine(tiny_cfg(pad=0), Dist(), V, ce_chunk_rows=chunk)
        padded = TorchEngine(tiny_cfg(), Dist(), V, ce_chunk_rows=chunk)
        assert padded.model.wte.weight.shape[0] == 128 and padded.num_params == plain.num_params
        padded.set_weights(plain.get_weights())
        for i in range(4):
            data = batches(2, seed=i)
            ra, rb = plain.train_step(data, 3e-3), padded.train_step(data, 3e-3)
            assert rb.loss == pytest.approx(ra.loss, rel=1e-5) and rb.grad_norm == pytest.approx(ra.grad_norm, rel=1e-4)
        assert max_diff(plain.get_weights(), padded.get_weights()) < 1e-4
        (ta, sa), (tb, sb) = plain.get_optimizer_state(), padded.get_optimizer_state()
        assert {k: v.shape for k, v in ta.items()} == {k: v.shape for k, v in tb.items()} and sa == sb
        assert float(padded.model.wte.weight[V:].detach().abs().max()) == 0.0   # never trained, never decayed
        x = batches(1)[0][:, :-1]
        assert padded.logits(x).shape == (2, 16, V)
        assert np.abs(padded.logits(x) - plain.logits(x)).max() < 1e-3
        assert padded.eval_loss(batches(1)[0])[0] == pytest.approx(plain.eval_loss(batches(1)[0])[0], rel=1e-5)
