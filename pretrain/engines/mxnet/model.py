"""GPT-2 as Gluon HybridBlocks (MXNet 1.9), GluonNLP style.

    model = GPT2Model(vocab_size=50000, units=768, num_layers=12, num_heads=12, max_length=1024)
    model.initialize(GPT2Init(num_layers=12))          # or init_gpt2(model)
    model.hybridize(static_alloc=True, static_shape=True)
    logits, present = model(ids)                        # ids (B, T) -> logits (B, T, V)
    logits, present = model(next_ids, present)          # incremental decoding with the kv cache

Pre-LayerNorm blocks (eps 1e-5), causal multi-head self-attention, position-wise FFN whose GELU is the
single fused exact-erf op `F.LeakyReLU(act_type='gelu')`, final LayerNorm, output projection tied to
the token embedding, dropout on embeddings, attention probabilities and residual branches.

The kv cache `present` is a list with one array per layer, (2, B, H, S, D): keys and values of every
position seen so far (S), heads H of size D = units / H. Calls with a cache run imperatively (the
cached graph is built for the cache-less signature), so decoding works on hybridized models too.

Tensor layout matches docs/CONTRACTS.md: dense weights (out, in), qkv rows q|k|v with heads
consecutive within each; `param_map(model)` gives the engine-neutral name of every Parameter.
"""
from __future__ import annotations

import math
from typing import Optional

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon import HybridBlock

_MASK_VALUE = -1e4  # added to masked attention scores; representable in fp16, exp() underflows to 0


def _imperative(block: HybridBlock, *args):
    """Run `block.hybrid_forward` eagerly on NDArrays, bypassing its cached graph.

    Used only for calls with a kv cache: their signature differs from the cached one."""
    ctx = args[0].context
    params = {name: p.data(ctx) for name, p in block._reg_params.items()}
    return block.hybrid_forward(mx.nd, *args, **params)


class GPT2SelfAttention(HybridBlock):
    """Causal multi-head self-attention: (B, T, U) -> (B, T, U), plus this layer's (2, B, H, S, D) cache."""

    def __init__(self, units: int, num_heads: int, dropout: float, prefix: str = None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._units = units
        self._num_heads = num_heads
        self._dropout = dropout
        with self.name_scope():
            self.qkv_weight = self.params.get("qkv_weight", shape=(3 * units, units))
            self.qkv_bias = self.params.get("qkv_bias", shape=(3 * units,), init="zeros")
            self.proj_weight = self.params.get("proj_weight", shape=(units, units))
            self.proj_bias = self.params.get("proj_bias", shape=(units,), init="zeros")

    def hybrid_forward(self, F, x, past=None, qkv_weight=None, qkv_bias=None, proj_weight=None,
                       proj_bias=None):
        H = self._num_heads
        # x: (B, T, U) -> qkv (B, T, 3U) -> (B, T, 3, H, D) -> (3, B, H, T, D)
        qkv = F.FullyConnected(x, qkv_weight, qkv_bias, num_hidden=3 * self._units, flatten=False)
        qkv = F.transpose(F.reshape(qkv, shape=(0, 0, 3, H, -1)), axes=(2, 0, 3, 1, 4))
        q, k, v = F.split(qkv, num_outputs=3, axis=0, squeeze_axis=True)      # each (B, H, T, D)
        offset = 0
        if past is not None:                                                   # imperative only
            offset = past.shape[3]
            k = F.concat(past[0], k, dim=2)                                    # (B, H, S, D)
            v = F.concat(past[1], v, dim=2)
        present = F.stack(k, v, axis=0)                                        # (2, B, H, S, D)
        q = F.contrib.div_sqrt_dim(q)
        # (B*H, T, D) x (B*H, S, D)^T -> scores (B*H, T, S)
        scores = F.batch_dot(F.reshape(q, shape=(-3, 0, 0)), F.reshape(k, shape=(-3, 0, 0)),
                             transpose_b=True)
        # causal mask: key position s is visible from query t iff s <= t + offset
        key_pos = F.reshape(F.contrib.arange_like(scores, axis=2), shape=(1, 1, -1))       # (1, 1, S)
        query_pos = F.reshape(F.contrib.arange_like(scores, axis=1), shape=(1, -1, 1))     # (1, T, 1)
        visible = F.broadcast_lesser_equal(key_pos, query_pos + offset)                     # (1, T, S)
        scores = F.broadcast_add(scores, (1 - visible) * _MASK_VALUE)
        probs = F.softmax(scores, axis=-1)
        if self._dropout:
            probs = F.Dropout(probs, p=self._dropout)
        ctx = F.batch_dot(probs, F.reshape(v, shape=(-3, 0, 0)))                # (B*H, T, D)
        # (B*H, T, D) -> (B, H, T, D) -> (B, T, H, D) -> (B, T, U)
        ctx = F.reshape(F.transpose(F.reshape(ctx, shape=(-4, -1, H, 0, 0)), axes=(0, 2, 1, 3)),
                        shape=(0, 0, -1))
        out = F.FullyConnected(ctx, proj_weight, proj_bias, num_hidden=self._units, flatten=False)
        return out, present


class GPT2FFN(HybridBlock):
    """Position-wise FFN: (B, T, U) -> fc (B, T, 4U) -> GELU -> proj (B, T, U).

    gelu="erf": the single fused exact op (the model's); gelu="tanh": the tanh approximation built
    from separate elementwise ops, kept only so bench/ can measure what fusing buys."""

    def __init__(self, units: int, hidden_size: int, gelu: str = "erf", prefix: str = None, params=None):
        super().__init__(prefix=prefix, params=params)
        if gelu not in ("erf", "tanh"):
            raise ValueError(f"gelu={gelu!r}: use erf (fused) or tanh (unfused approximation)")
        self._units, self._hidden, self._gelu = units, hidden_size, gelu
        with self.name_scope():
            self.fc_weight = self.params.get("fc_weight", shape=(hidden_size, units))
            self.fc_bias = self.params.get("fc_bias", shape=(hidden_size,), init="zeros")
            self.proj_weight = self.params.get("proj_weight", shape=(units, hidden_size))
            self.proj_bias = self.params.get("proj_bias", shape=(units,), init="zeros")

    def hybrid_forward(self, F, x, fc_weight=None, fc_bias=None, proj_weight=None, proj_bias=None):
        h = F.FullyConnected(x, fc_weight, fc_bias, num_hidden=self._hidden, flatten=False)
        if self._gelu == "erf":
            h = F.LeakyReLU(h, act_type="gelu")        # one fused kernel: 0.5 x (1 + erf(x / sqrt 2))
        else:
            c = math.sqrt(2.0 / math.pi)               # 0.5 x (1 + tanh(c (x + 0.044715 x^3))), 6 ops
            h = 0.5 * h * (1.0 + F.tanh(c * (h + 0.044715 * h * h * h)))
        return F.FullyConnected(h, proj_weight, proj_bias, num_hidden=self._units, flatten=False)


class GPT2Block(HybridBlock):
    """Pre-LN transformer block: x + attn(ln_1(x)), then + ffn(ln_2(.)); dropout on both branches."""

    def __init__(self, units: int, hidden_size: int, num_heads: int, dropout: float, eps: float,
                 gelu: str = "erf", prefix: str = None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._dropout = dropout
        with self.name_scope():
            self.ln_1 = gluon.nn.LayerNorm(epsilon=eps, in_channels=units, prefix="ln_1_")
            self.attn = GPT2SelfAttention(units, num_heads, dropout, prefix="attn_")
            self.ln_2 = gluon.nn.LayerNorm(epsilon=eps, in_channels=units, prefix="ln_2_")
            self.mlp = GPT2FFN(units, hidden_size, gelu=gelu, prefix="mlp_")

    def hybrid_forward(self, F, x, past=None):
        h = self.ln_1(x)
        a, present = self.attn(h) if past is None else _imperative(self.attn, h, past)
        if self._dropout:
            a = F.Dropout(a, p=self._dropout)
        x = x + a
        m = self.mlp(self.ln_2(x))
        if self._dropout:
            m = F.Dropout(m, p=self._dropout)
        return x + m, present


class GPT2Model(HybridBlock):
    """ids (B, T) int -> (logits (B, T, V), present: list of L arrays (2, B, H, S, D)).

    `model(ids, past)` continues from a cache of S_past positions; positions are offset by S_past.
    Logits come out in the model's dtype (fp16 when cast); the loss casts to fp32.
    """

    def __init__(self, vocab_size: int, units: int, num_layers: int, num_heads: int, max_length: int,
                 hidden_size: Optional[int] = None, dropout: float = 0.1, layer_norm_eps: float = 1e-5,
                 gelu: str = "erf", prefix: str = "gpt2_", params=None):
        super().__init__(prefix=prefix, params=params)
        self.vocab_size, self.units, self.num_layers = vocab_size, units, num_layers
        self.num_heads, self.max_length = num_heads, max_length
        self.hidden_size = hidden_size or 4 * units
        self._dropout = dropout
        self._dtype = "float32"
        with self.name_scope():
            self.wte_weight = self.params.get("wte_weight", shape=(vocab_size, units))
            self.wpe_weight = self.params.get("wpe_weight", shape=(max_length, units))
            self.blocks = gluon.nn.HybridSequential(prefix="h_")
            with self.blocks.name_scope():
                for i in range(num_layers):
                    self.blocks.add(GPT2Block(units, self.hidden_size, num_heads, dropout, layer_norm_eps,
                                              gelu=gelu, prefix=f"{i}_"))
            self.ln_f = gluon.nn.LayerNorm(epsilon=layer_norm_eps, in_channels=units, prefix="ln_f_")

    def cast(self, dtype):
        """Cast parameters (fp16 training); the Embedding ops must be told the new weight dtype."""
        self._dtype = np.dtype(dtype).name
        super().cast(dtype)

    def forward(self, ids, past=None):  # noqa: D401 - Gluon entry point
        if past is None:
            return super().forward(ids)
        return _imperative(self, ids, past)

    def hybrid_forward(self, F, ids, past=None, wte_weight=None, wpe_weight=None):
        U, V = self.units, self.vocab_size
        offset = 0 if past is None else past[0].shape[3]
        # positions 0..T-1 (+ cached length), ids (B, T) -> token (B, T, U) + position (1, T, U)
        pos = F.contrib.arange_like(ids, axis=1) + offset
        x = F.Embedding(ids, wte_weight, input_dim=V, output_dim=U, dtype=self._dtype)
        x = F.broadcast_add(x, F.expand_dims(F.Embedding(pos, wpe_weight, input_dim=self.max_length,
                                                         output_dim=U, dtype=self._dtype), axis=0))
        if self._dropout:
            x = F.Dropout(x, p=self._dropout)
        present = []
        for i, block in enumerate(self.blocks):
            x, p = block(x) if past is None else _imperative(block, x, past[i])
            present.append(p)
        x = self.ln_f(x)
        # output projection tied to the token embedding: (B, T, U) x (V, U)^T -> (B, T, V)
        logits = F.FullyConnected(x, wte_weight, no_bias=True, num_hidden=V, flatten=False)
        return logits, present


class GPT2LossBlock(HybridBlock):
    """Training/eval head: (inputs (B, T), targets (B, T)) -> summed token cross-entropy, shape (1,), fp32.

    A separate graph so the kv cache outputs are pruned from the training graph."""

    def __init__(self, model: GPT2Model, prefix: str = "loss_", params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.model = model

    def hybrid_forward(self, F, inputs, targets):
        logits, _ = self.model(inputs)
        logp = F.log_softmax(F.cast(logits, "float32"), axis=-1)        # (B, T, V) fp32 for stability
        nll = -F.pick(logp, targets, axis=-1)                           # (B, T)
        return F.sum(nll).reshape((1,))


def param_map(model: GPT2Model) -> dict[str, gluon.Parameter]:
    """Engine-neutral tensor name (docs/CONTRACTS.md) -> Gluon Parameter, in a fixed order."""
    out = {"wte.weight": model.wte_weight, "wpe.weight": model.wpe_weight}
    for i, b in enumerate(model.blocks):
        out.update({
            f"h.{i}.ln_1.weight": b.ln_1.gamma, f"h.{i}.ln_1.bias": b.ln_1.beta,
            f"h.{i}.attn.qkv.weight": b.attn.qkv_weight, f"h.{i}.attn.qkv.bias": b.attn.qkv_bias,
            f"h.{i}.attn.proj.weight": b.attn.proj_weight, f"h.{i}.attn.proj.bias": b.attn.proj_bias,
            f"h.{i}.ln_2.weight": b.ln_2.gamma, f"h.{i}.ln_2.bias": b.ln_2.beta,
            f"h.{i}.mlp.fc.weight": b.mlp.fc_weight, f"h.{i}.mlp.fc.bias": b.mlp.fc_bias,
            f"h.{i}.mlp.proj.weight": b.mlp.proj_weight, f"h.{i}.mlp.proj.bias": b.mlp.proj_bias,
        })
    out.update({"ln_f.weight": model.ln_f.gamma, "ln_f.bias": model.ln_f.beta})
    return out


def decays(name: str) -> bool:
    """Weight decay applies to the 2-D dense weights and wte; not to biases, LayerNorm, wpe."""
    return name == "wte.weight" or name.endswith(("qkv.weight", "proj.weight", "fc.weight"))


def init_gpt2(model: GPT2Model, ctx=None, std: float = 0.02) -> None:
    """GPT-2 initialisation: N(0, std) weights, residual projections N(0, std / sqrt(2L)), biases 0,
    LayerNorm 1/0. Draws from MXNet's global RNG (seed it first for reproducible weights)."""
    resid_std = std / math.sqrt(2 * model.num_layers)
    for name, p in param_map(model).items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            init = mx.init.One()
        elif name.endswith("bias"):
            init = mx.init.Zero()
        elif name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            init = mx.init.Normal(resid_std)
        else:
            init = mx.init.Normal(std)
        p.initialize(init=init, ctx=ctx, force_reinit=True)


def build_model(cfg_model, vocab_size: int, gelu: str = "erf") -> GPT2Model:
    """A GPT2Model from a `common.schema.ModelConfig` (sizes already resolved from its preset)."""
    return GPT2Model(vocab_size=vocab_size, units=cfg_model.units, num_layers=cfg_model.num_layers,
                     num_heads=cfg_model.num_heads, max_length=cfg_model.max_length,
                     hidden_size=cfg_model.hidden_size, dropout=cfg_model.dropout,
                     layer_norm_eps=cfg_model.layer_norm_eps, gelu=gelu)


def generate_greedy(model: GPT2Model, ids: mx.nd.NDArray, steps: int, use_cache: bool = True) -> list[int]:
    """Greedy continuation of ids (1, T) by `steps` tokens; with or without the kv cache (for tests
    and the generate tool). Returns the new token ids."""
    out: list[int] = []
    past = None
    cur = ids
    seq = ids
    for _ in range(steps):
        if use_cache:
            logits, past = model(cur, past) if past is not None else model(cur)
        else:
            logits, _ = model(seq)
        nxt = int(logits[0, -1].argmax(axis=-1).asscalar())
        out.append(nxt)
        cur = mx.nd.array([[nxt]], ctx=ids.context, dtype=ids.dtype)
        seq = mx.nd.concat(seq, cur, dim=1)
    return out
