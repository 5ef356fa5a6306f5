"""The MXNet/Gluon GPT-2: graph == imperative, tied output, names, init, kv-cache decoding, GELU."""
import math
import re

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from pretrain.engines.mxnet.gpu import UnsupportedGPUError  # noqa: E402
from pretrain.engines.mxnet import gpu as gpu_mod  # noqa: E402
from pretrain.engines.mxnet.model import (GPT2FFN, GPT2LossBlock, GPT2Model, decays, generate_greedy,  # noqa: E402
                                          init_gpt2, param_map)

V, U, L, H, CTX = 97, 32, 2, 4, 24


def _model(dropout=0.0, seed=0, **kw):
    mx.random.seed(seed)
    m = GPT2Model(vocab_size=V, units=U, num_layers=L, num_heads=H, max_length=CTX, dropout=dropout, **kw)
    init_gpt2(m)
    return m


def _ids(b=2, t=10, seed=0):
    return mx.nd.array(np.random.default_rng(seed).integers(0, V, (b, t)), dtype="int32")


def test_shapes_and_present():
    m = _model()
    logits, present = m(_ids(3, 7))
    assert logits.shape == (3, 7, V)
    assert len(present) == L and present[0].shape == (2, 3, H, 7, U // H)
    # the KoGPT2-style call: model(input_ids)[0] -> (batch, length, vocab)
    assert m(_ids(1, 5))[0].shape == (1, 5, V)


def test_hybridized_equals_imperative_with_dropout_in_eval_mode():
    m = _model(dropout=0.1)
    ids = _ids()
    eager = m(ids)[0].asnumpy()
    m.hybridize(static_alloc=True, static_shape=True)
    graph = m(ids)[0].asnumpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)
    # the training loss graph too, in train mode with dropout drawn from the same seed
    lb = GPT2LossBlock(m)
    lb.hybridize(static_alloc=True, static_shape=True)
    m2 = _model(dropout=0.1)
    lb2 = GPT2LossBlock(m2)
    with mx.autograd.train_mode():
        mx.random.seed(7)
        a = lb(ids[:, :-1], ids[:, 1:]).asscalar()
        mx.random.seed(7)
        b = lb2(ids[:, :-1], ids[:, 1:]).asscalar()
    assert a == pytest.approx(b, rel=1e-5)


def test_output_projection_is_tied_to_token_embedding():
    m = _model()
    names = set(param_map(m))
    assert "wte.weight" in names and not any("lm_head" in n or "out" in n for n in names)
    assert len(list(m.collect_params().keys())) == len(names)               # no hidden extra (untied) weight
    m.wte_weight.set_data(mx.nd.zeros((V, U)))
    logits = m(_ids())[0].asnumpy()
    assert np.abs(logits).max() == 0.0                          # logits = h @ wte^T exactly


def test_engine_neutral_names_match_contract():
    m = _model()
    expected = {"wte.weight": (V, U), "wpe.weight": (CTX, U), "ln_f.weight": (U,), "ln_f.bias": (U,)}
    for i in range(L):
        expected.update({
            f"h.{i}.ln_1.weight": (U,), f"h.{i}.ln_1.bias": (U,), f"h.{i}.ln_2.weight": (U,), f"h.{i}.ln_2.bias": (U,),
            f"h.{i}.attn.qkv.weight": (3 * U, U), f"h.{i}.attn.qkv.bias": (3 * U,),
            f"h.{i}.attn.proj.weight": (U, U), f"h.{i}.attn.proj.bias": (U,),
            f"h.{i}.mlp.fc.weight": (4 * U, U), f"h.{i}.mlp.fc.bias": (4 * U,),
            f"h.{i}.mlp.proj.weight": (U, 4 * U), f"h.{i}.mlp.proj.bias": (U,)})
    assert {n: p.shape for n, p in param_map(m).items()} == expected
    decayed = {n for n in expected if decays(n)}
    assert decayed == {n for n in expected if re.search(r"(qkv|proj|fc)\.weight$", n)} | {"wte.weight"}


def test_gpt2_initialisation():
    mx.random.seed(0)
    m = GPT2Model(vocab_size=2000, units=256, num_layers=4, num_heads=4, max_length=64, dropout=0.0)
    init_gpt2(m)
    p = {n: v.data().asnumpy() for n, v in param_map(m).items()}
    assert p["wte.weight"].std() == pytest.approx(0.02, rel=0.02)
    assert p["h.0.mlp.fc.weight"].std() == pytest.approx(0.02, rel=0.02)
    resid = 0.02 / math.sqrt(2 * 4)
    assert p["h.3.attn.proj.weight"].std() == pytest.approx(resid, rel=0.05)
    assert p["h.1.mlp.proj.weight"].std() == pytest.approx(resid, rel=0.03)
    assert np.all(p["h.2.attn.qkv.bias"] == 0) and np.all(p["ln_f.weight"] == 1) and np.all(p["h.0.ln_2.bias"] == 0)


def test_causal_attention_ignores_future_tokens():
    m = _model()
    a = _ids(1, 10, seed=1).asnumpy()
    b = a.copy()
    b[0, 6:] = (b[0, 6:] + 1) % V
    la = m(mx.nd.array(a, dtype="int32"))[0].asnumpy()
    lb = m(mx.nd.array(b, dtype="int32"))[0].asnumpy()
    np.testing.assert_allclose(la[0, :6], lb[0, :6], rtol=1e-6, atol=1e-6)
    assert np.abs(la[0, 6:] - lb[0, 6:]).max() > 1e-3


@pytest.mark.parametrize("hybrid", [False, True])
def test_cached_decoding_matches_full_recompute(hybrid):
    m = _model(seed=3)
    # a random model tends to repeat one token; large position embeddings make every step differ,
    # so a wrong position offset or cache in incremental decoding would change the tokens
    m.wpe_weight.set_data(mx.nd.random.normal(scale=1.0, shape=(CTX, U)))
    if hybrid:
        m.hybridize(static_alloc=True, static_shape=True)
    prompt = _ids(1, 5, seed=2)
    cached = generate_greedy(m, prompt, 12, use_cache=True)
    full = generate_greedy(m, prompt, 12, use_cache=False)
    assert cached == full
    assert len(set(cached)) > 1
    # logits of the last position agree too
    logits_full, _ = m(prompt)
    _, past = m(prompt[:, :4])
    logits_inc, past2 = m(prompt[:, 4:], past)
    np.testing.assert_allclose(logits_inc.asnumpy()[0, -1], logits_full.asnumpy()[0, -1], rtol=1e-4, atol=1e-5)
    assert past2[0].shape[3] == 5


def test_fused_gelu_is_exact_erf_and_tanh_variant_is_close():
    mx.random.seed(0)
    x = mx.nd.array(np.linspace(-4, 4, 41).reshape(1, 1, 41))
    y = mx.nd.LeakyReLU(x, act_type="gelu").asnumpy().ravel()
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.asnumpy().ravel()])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    fused, unfused = GPT2FFN(8, 32, gelu="erf", prefix="a_"), GPT2FFN(8, 32, gelu="tanh", prefix="b_")
    fused.initialize(mx.init.Normal(0.5))
    unfused.initialize(mx.init.Normal(0.5))
    for (_, p), (_, q) in zip(sorted(fused.collect_params().items()), sorted(unfused.collect_params().items())):
        q.set_data(p.data())
    inp = mx.nd.random.normal(shape=(2, 3, 8))
    np.testing.assert_allclose(fused(inp).asnumpy(), unfused(inp).asnumpy(), atol=5e-3)


def test_gpu_newer_than_mxnet_kernels_is_refused(monkeypatch):
    monkeypatch.setattr(gpu_mod, "gpu_info", lambda i: ("NVIDIA H100 80GB HBM3", (9, 0)))
    with pytest.raises(UnsupportedGPUError, match=r"compute capability 9\.0.*train\.engine: torch"):
        gpu_mod.check_mxnet_supports(0)
    monkeypatch.setattr(gpu_mod, "gpu_info", lambda i: ("NVIDIA A100-SXM4-40GB", (8, 0)))
    assert gpu_mod.check_mxnet_supports(0) == "NVIDIA A100-SXM4-40GB"
