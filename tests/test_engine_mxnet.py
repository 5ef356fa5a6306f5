"""MXNetEngine in one process: AdamW arithmetic, accumulation, exact state round trip, names."""
import math

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from common.config import load_config  # noqa: E402
from pretrain.train.dist import Dist  # noqa: E402
from pretrain.engines.mxnet.engine import GPT2AdamW, MXNetEngine  # noqa: E402

V = 120


def _engine(**sets):
    overrides = [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    cfg = load_config("configs/tiny.yaml", overrides)
    return MXNetEngine(cfg, Dist(), V)


def _batches(n, b=2, t=33, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, (b, t)).astype(np.int32) for _ in range(n)]


def test_adamw_matches_the_torch_formula():
    opt = GPT2AdamW(learning_rate=0.1, beta1=0.9, beta2=0.99, epsilon=1e-8, wd=0.1)
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    w = mx.nd.array(w0)
    st = opt.create_state(0, w)
    m = v = np.zeros(3)
    ref = w0.astype(np.float64)
    for t, g in enumerate([np.array([0.1, 0.2, -0.3]), np.array([-0.5, 0.1, 0.0])], start=1):
        opt.update(0, w, mx.nd.array(g), st)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        ref = ref * (1 - 0.1 * 0.1)
        ref = ref - 0.1 / (1 - 0.9 ** t) * m / (np.sqrt(v) / math.sqrt(1 - 0.99 ** t) + 1e-8)
    np.testing.assert_allclose(w.asnumpy(), ref, rtol=1e-5)


def test_accumulating_micro_batches_equals_one_big_batch():
    a, b = _engine(model__dropout=0), _engine(model__dropout=0)
    mb = _batches(2)
    ra = a.train_step(mb, 1e-3)
    rb = b.train_step([np.concatenate(mb)], 1e-3)
    assert ra.loss == pytest.approx(rb.loss, rel=1e-6)
    assert ra.grad_norm == pytest.approx(rb.grad_norm, rel=1e-5)
    wa, wb = a.get_weights(), b.get_weights()
    for n in wa:
        np.testing.assert_allclose(wa[n], wb[n], rtol=1e-5, atol=1e-5)   # Adam: ~lr x sign(g) for g~0


def test_state_round_trip_continues_bit_for_bit():
    a = _engine()
    for i in range(3):
        a.train_step(_batches(2, seed=i), 1e-3)
    w, (opt_t, opt_s), rng = a.get_weights(), a.get_optimizer_state(), a.get_rng_state()
    assert opt_s["step"] == 3 and rng["calls"] == 3
    assert set(opt_t) == {f"{k}.{n}" for n in w for k in ("exp_avg", "exp_avg_sq")}
    b = _engine(train__seed=999)                 # other initial weights and seed: all must be overwritten
    b.set_weights(w)
    b.set_optimizer_state(opt_t, opt_s)
    b.set_rng_state(rng)
    b.seed = a.seed
    for i in range(3, 5):
        ra, rb = a.train_step(_batches(2, seed=i), 5e-4), b.train_step(_batches(2, seed=i), 5e-4)
        assert ra.loss == rb.loss and ra.grad_norm == rb.grad_norm
    wa, wb = a.get_weights(), b.get_weights()
    assert all(np.array_equal(wa[n], wb[n]) for n in wa)


def test_weight_decay_skips_biases_layernorm_and_wpe():
    e = _engine(optim__weight_decay=0.5)
    mults = {n: p.wd_mult for n, p in e.params.items()}
    assert mults["wte.weight"] == 1 and mults["h.0.attn.qkv.weight"] == 1 and mults["h.1.mlp.proj.weight"] == 1
    assert mults["wpe.weight"] == 0 and mults["h.0.ln_1.weight"] == 0 and mults["h.0.mlp.fc.bias"] == 0


def test_set_weights_rejects_wrong_names_and_shapes():
    e = _engine()
    w = e.get_weights()
    bad = dict(w)
    bad.pop("ln_f.bias")
    with pytest.raises(ValueError, match="missing"):
        e.set_weights(bad)
    bad = dict(w, **{"wte.weight": np.zeros((V + 1, 64), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        e.set_weights(bad)


def test_eval_loss_and_logits_are_consistent():
    e = _engine()
    batch = _batches(1)[0]
    s, n = e.eval_loss(batch)
    logits = e.logits(batch[:, :-1]).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    ref = -np.take_along_axis(logp, batch[:, 1:, None].astype(np.int64), -1).sum()
    assert n == batch[:, 1:].size and s == pytest.approx(ref, rel=1e-5)
    assert e.num_params == sum(int(np.prod(p.shape)) for p in e.params.values())


def test_state_copies_into_reused_host_buffers():
    """Checkpoint snapshots fill the previous save's arrays in place, with the current values."""
    e = _engine()
    e.train_step(_batches(2, seed=0), 1e-3)
    host = dict(e.get_weights())
    host.update(e.get_optimizer_state()[0])
    e.train_step(_batches(2, seed=1), 1e-3)
    w, (t, _) = e.get_weights(out=host), e.get_optimizer_state(out=host)
    assert all(w[n] is host[n] for n in w) and all(t[k] is host[k] for k in t)
    fresh_w, (fresh_t, _) = e.get_weights(), e.get_optimizer_state()
    assert all(np.array_equal(w[n], fresh_w[n]) for n in w) and all(np.array_equal(t[k], fresh_t[k]) for k in t)
    assert not np.array_equal(w["wte.weight"], _engine().get_weights()["wte.weight"])   # really updated


def test_dynamic_loss_scaling_arithmetic_on_the_cpu():
    """The fp16 path's bookkeeping, run in fp32 (MXNet has no fp16 dense kernels on the CPU): a scaled
    loss gives the unscaled step exactly (powers of two), an overflow skips the step and halves the
    scale without touching the weights, and SCALE_WINDOW good steps double it."""
    from pretrain.engines.mxnet.engine import SCALE_WINDOW

    def weights(e):
        return {n: p.data().asnumpy() for n, p in e.params.items()}

    plain, scaled = _engine(), _engine()
    scaled.precision, scaled.loss_scale = "fp16", 1024.0    # the scaling logic only; arithmetic stays fp32
    for i in range(3):
        ra, rb = plain.train_step(_batches(2, seed=i), 1e-3), scaled.train_step(_batches(2, seed=i), 1e-3)
        assert rb.loss == ra.loss and rb.grad_norm == pytest.approx(ra.grad_norm, rel=1e-6) and not rb.skipped
    wa, wb = weights(plain), weights(scaled)
    assert all(np.allclose(wa[n], wb[n], rtol=1e-6, atol=1e-7) for n in wa)

    scaled.loss_scale = 3e38                                 # loss x scale overflows to inf
    before = weights(scaled)
    r = scaled.train_step(_batches(2, seed=9), 1e-3)
    assert r.skipped and not math.isfinite(r.grad_norm) and r.loss_scale == scaled.loss_scale == 1.5e38
    assert all(np.array_equal(before[n], a) for n, a in weights(scaled).items())
    assert all(float(p.grad().abs().sum().asscalar()) == 0.0 for p in scaled.params.values())  # not carried over

    scaled.loss_scale, scaled._good_steps = 1024.0, SCALE_WINDOW - 1
    r = scaled.train_step(_batches(2, seed=10), 1e-3)
    assert not r.skipped and r.loss_scale == 2048.0 and scaled._good_steps == 0
