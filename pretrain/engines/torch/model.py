"""GPT-2 in plain PyTorch: the same model as the MXNet engine, under the same tensor names.

Module and parameter names are chosen so that `GPT2.state_dict()` keys ARE the engine-neutral names
of docs/CONTRACTS.md (`wte.weight`, `h.0.attn.qkv.weight`, ..., `ln_f.bias`); the output projection
is tied to `wte` (no separate key). Dense weights are `nn.Linear`, i.e. stored (out, in).

Shapes: B batch, T new positions, S = past + T key positions, U units, H heads, D = U / H head size,
V vocab. This file imports only torch: no Horovod, no MXNet, no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

KV = tuple[torch.Tensor, torch.Tensor]          # one layer's (key, value), each (B, H, S, D)


@dataclass
class GPT2Shape:
    """The sizes the model needs (a subset of common.schema.ModelConfig, so this file stands alone)."""

    vocab_size: int
    num_layers: int = 12
    units: int = 768
    num_heads: int = 12
    max_length: int = 1024
    hidden_size: int = 0          # FFN inner size; 0 = 4 * units
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    pad_vocab_multiple: int = 0   # > 0: wte has padded_vocab rows (extra ones zero, their logits masked)

    @classmethod
    def from_config(cls, model_cfg, vocab_size: int, pad_vocab_multiple: int = 0) -> "GPT2Shape":
        """From a `common.schema.ModelConfig`; `vocab_size` is the resolved one (tokenizer's when 0)."""
        return cls(vocab_size=vocab_size, num_layers=model_cfg.num_layers, units=model_cfg.units,
                   num_heads=model_cfg.num_heads, max_length=model_cfg.max_length,
                   hidden_size=model_cfg.hidden_size or 4 * model_cfg.units, dropout=model_cfg.dropout,
                   layer_norm_eps=model_cfg.layer_norm_eps, pad_vocab_multiple=pad_vocab_multiple)

    def __post_init__(self) -> None:
        if not self.hidden_size:
            self.hidden_size = 4 * self.units

    @property
    def padded_vocab(self) -> int:
        """Rows of wte: V rounded up to pad_vocab_multiple. GPU matmuls whose output width is a
        multiple of 64 run on full tensor-core tiles (nanoGPT pads 50,257 to 50,304 for this)."""
        m = self.pad_vocab_multiple
        return -(-self.vocab_size // m) * m if m > 0 else self.vocab_size


class Attention(nn.Module):
    """Causal multi-head self-attention through `scaled_dot_product_attention` (flash kernels on GPU)."""

    def __init__(self, s: GPT2Shape):
        super().__init__()
        self.num_heads, self.dropout = s.num_heads, s.dropout
        self.qkv = nn.Linear(s.units, 3 * s.units)   # rows: q, k, v; heads consecutive within each
        self.proj = nn.Linear(s.units, s.units)

    def forward(self, x: torch.Tensor, past: Optional[KV] = None) -> tuple[torch.Tensor, KV]:
        B, T, U = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split(U, dim=2)                                  # 3 x (B, T, U)
        q, k, v = (t.view(B, T, H, U // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)                                 # (B, H, S, D)
            v = torch.cat([past[1], v], dim=2)
        S = k.size(2)
        drop = self.dropout if self.training else 0.0
        if S == T:          # no cache: plain causal mask (lets SDPA pick the flash kernel)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif T == 1:        # one new token attends to everything before it
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:               # T new tokens after S - T cached ones: causal mask aligned bottom-right
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, U)                                 # (B, T, U)
        return self.proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, s: GPT2Shape):
        super().__init__()
        self.fc = nn.Linear(s.units, s.hidden_size)
        self.proj = nn.Linear(s.hidden_size, s.units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="none"))   # exact erf GELU, as GPT-2 / MXNet


class Block(nn.Module):
    """Pre-LayerNorm transformer block with dropout on both residual branches."""

    def __init__(self, s: GPT2Shape):
        super().__init__()
        self.ln_1 = nn.LayerNorm(s.units, eps=s.layer_norm_eps)
        self.attn = Attention(s)
        self.ln_2 = nn.LayerNorm(s.units, eps=s.layer_norm_eps)
        self.mlp = MLP(s)
        self.drop = nn.Dropout(s.dropout)

    def forward(self, x: torch.Tensor, past: Optional[KV] = None) -> tuple[torch.Tensor, KV]:
        a, present = self.attn(self.ln_1(x), past)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x, present


class GPT2(nn.Module):
    """GPT-2 language model; `state_dict()` keys are the engine-neutral names."""

    def __init__(self, s: GPT2Shape):
        super().__init__()
        self.shape = s
        self.wte = nn.Embedding(s.padded_vocab, s.units)                         # (Vp, U), rows >= V zero
        self.wpe = nn.Embedding(s.max_length, s.units)
        self.drop = nn.Dropout(s.dropout)
        self.h = nn.ModuleList([Block(s) for _ in range(s.num_layers)])
        self.ln_f = nn.LayerNorm(s.units, eps=s.layer_norm_eps)
        # -inf on the padded logits so softmax and loss are those over the V real ones; no gradient
        # reaches the padded rows, which stay zero. Not persistent: never in state_dict/checkpoints.
        self.logit_bias: Optional[torch.Tensor]
        if s.padded_vocab > s.vocab_size:
            bias = torch.zeros(s.padded_vocab)
            bias[s.vocab_size:] = float("-inf")
            self.register_buffer("logit_bias", bias, persistent=False)
        else:
            self.logit_bias = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init (CONTRACTS.md): N(0, 0.02); residual output projections N(0, 0.02/sqrt(2L))."""
        resid_std = 0.02 / math.sqrt(2 * self.shape.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_f"):
                p.fill_(1.0)
            elif name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                p.normal_(0.0, resid_std)
            else:
                p.normal_(0.0, 0.02)
        self.wte.weight[self.shape.vocab_size:] = 0.0

    def num_params(self) -> int:
        """Trainable parameters; the tied output projection is `wte`, counted once, padding not."""
        pad = (self.shape.padded_vocab - self.shape.vocab_size) * self.shape.units
        return sum(p.numel() for p in self.parameters()) - pad

    def embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, T) int ids at positions start.. start+T-1 -> token + position embeddings (B, T, U), dropout."""
        T = ids.size(1)
        if start + T > self.shape.max_length:
            raise ValueError(f"sequence of {start + T} positions exceeds model.max_length="
                             f"{self.shape.max_length}")
        pos = torch.arange(start, start + T, device=ids.device)                 # (T,)
        return self.drop(self.wte(ids) + self.wpe(pos))

    def hidden(self, ids: torch.Tensor, past: Optional[list[KV]] = None) -> tuple[torch.Tensor, list[KV]]:
        """(B, T) int ids -> final-LayerNorm hidden states (B, T, U) and the per-layer (k, v) cache."""
        start = 0 if past is None else past[0][0].size(2)
        x = self.embed(ids, start)                                             # (B, T, U)
        present: list[KV] = []
        for i, block in enumerate(self.h):
            x, kv = block(x, None if past is None else past[i])
            present.append(kv)
        return self.ln_f(x), present

    def forward(self, ids: torch.Tensor, past: Optional[list[KV]] = None) -> tuple[torch.Tensor, list[KV]]:
        """(B, T) ids [+ cache of S - T earlier positions] -> logits (B, T, V) and the cache (S positions).

        Incremental decoding: `logits, past = model(prompt)`, then `model(next_ids, past=past)`.
        """
        x, present = self.hidden(ids, past)
        return F.linear(x, self.wte.weight)[..., :self.shape.vocab_size], present   # (B, T, V)

    def loss(self, ids: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 0,
             reduction: str = "mean") -> torch.Tensor:
        """Token cross-entropy (nats) of `targets` (B, T) given `ids` (B, T); 'mean' or 'sum'.

        chunk_rows = 0: full (B*T, V) logits then `F.cross_entropy` (with torch.compile the fp32 upcast
        and the softmax fuse into one kernel, so only the low-precision logits are stored).
        chunk_rows > 0: `chunked_cross_entropy`, which never holds more than chunk_rows x V logits.
        """
        x, _ = self.hidden(ids)
        return self.head_loss(x, targets, chunk_rows, reduction)

    def head_loss(self, x: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 0,
                  reduction: str = "mean") -> torch.Tensor:
        """The loss from the final hidden states x (B, T, U): tied output projection + cross-entropy of
        `targets` (B, T); `loss` = head_loss(hidden(ids)). Separate so that a per-block compile
        (pretrain/engines/torch/compile.py) can compile it as one more graph."""
        x = x.reshape(-1, x.size(-1))                                          # (B*T, U)
        t = targets.reshape(-1).long()                                         # (B*T,)
        if chunk_rows > 0:
            return chunked_cross_entropy(x, self.wte.weight, t, chunk_rows, reduction, self.logit_bias)
        logits = F.linear(x, self.wte.weight, self.logit_bias)                 # (B*T, Vp)
        return F.cross_entropy(logits.float(), t, reduction=reduction)


class _ChunkedLinearCE(torch.autograd.Function):
    """Summed cross-entropy of (x @ w.T), computed chunk by chunk, gradients produced in forward.

    Forward holds one (chunk_rows, V) block of logits at a time (in fp32 for the softmax) and keeps
    only dx (N, U) and dw (V, U) for backward, instead of the (N, V) logits and their gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, t: torch.Tensor, chunk_rows: int,  # type: ignore[override]
                compute_dtype: torch.dtype, want_grad: bool, bias: Optional[torch.Tensor]) -> torch.Tensor:
        N = x.size(0)
        xc, wc = x.to(compute_dtype), w.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        dx = torch.empty_like(x) if want_grad else None
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if want_grad else None
        for s in range(0, N, chunk_rows):
            xs, ts = xc[s:s + chunk_rows], t[s:s + chunk_rows]                  # (n, U), (n,)
            logits = (xs @ wc.t()).float()                                     # (n, V) fp32
            if bias is not None:
                logits += bias                                                 # -inf on padded columns
            lse = torch.logsumexp(logits, dim=1)                               # (n,)
            total += (lse - logits.gather(1, ts[:, None]).squeeze(1)).sum()
            if want_grad:
                g = logits.sub_(lse[:, None]).exp_()                           # softmax (n, V), in place
                g[torch.arange(g.size(0), device=g.device), ts] -= 1.0         # d loss_i / d logits_i
                g = g.to(compute_dtype)
                dx[s:s + chunk_rows] = (g @ wc).to(x.dtype)                    # (n, U)
                dw += (g.t() @ xs).float()                                     # (V, U)
        ctx.save_for_backward(dx, dw)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):  # type: ignore[override]
        dx, dw = ctx.saved_tensors
        return dx * grad_total.to(dx.dtype), (dw * grad_total).to(dw.dtype), None, None, None, None, None


def chunked_cross_entropy(x: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 8192,
                          reduction: str = "mean", bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of logits x @ w.T (+ bias (V,)) without materializing them: x (N, U), w (V, U),
    targets (N,).

    Matmuls run in the autocast dtype when autocast is on (bf16 on GPU), the softmax in fp32.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum'")
    dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    want_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    with torch.autocast(x.device.type, enabled=False):
        total = _ChunkedLinearCE.apply(x, w, targets, chunk_rows, dtype, want_grad, bias)   # () fp32
    return total / x.size(0) if reduction == "mean" else total
