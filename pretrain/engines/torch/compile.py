"""How the torch engine compiles its training loss (`train.compile`, `train.compile_scope`).

    loss_fn = compiled_loss(model, scope="block")     # same signature as GPT2.loss
    loss = loss_fn(ids, targets, chunk_rows=0)        # (B, T) ids and targets -> () mean nats

scope "model": the whole loss (embeddings, every block, head, cross-entropy) is one graph. Its backward
is one compiled function that hands back every parameter's gradient when it returns, so Horovod's
per-gradient allreduces (hooks on each parameter's gradient accumulation) all start after the backward.

scope "block" (as torchtitan does): each transformer block is compiled on its own, plus one graph for
the head (final LayerNorm, tied output projection, cross-entropy); the embeddings stay eager. The
backward then runs one compiled graph per block, last block first, and each one's parameters receive
their gradients when that graph returns: Horovod's allreduces of block L start while blocks L-1..0
are still differentiating (bench/overlap.py measures when). The graphs are compiled once: the blocks
share one code object and torch >= 2.5 treats module parameters as graph inputs
(`inline_inbuilt_nn_modules`), so block 2..L reuse block 1's graph (no per-block recompilation).

Only the training/eval loss is compiled: `GPT2.forward` (generation with a growing key/value cache,
`engine.logits`) stays eager, since every new cache length would be another static shape to compile.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from pretrain.engines.torch.model import GPT2

LossFn = Callable[..., torch.Tensor]


def compiled_loss(model: GPT2, scope: str = "block", mode: Optional[str] = None) -> LossFn:
    """A function with `GPT2.loss`'s signature that runs `model` through torch.compile'd graphs.

    mode: torch.compile's `mode` (None = default; e.g. "max-autotune" on GPUs). Static shapes
    (`dynamic=False`): training and eval batches have one shape each."""
    if scope == "model":
        return torch.compile(model.loss, dynamic=False, mode=mode)
    if scope != "block":
        raise ValueError(f"compile scope {scope!r}: use block or model")
    blocks = [torch.compile(b, dynamic=False, mode=mode) for b in model.h]

    def head_fn(x: torch.Tensor, targets: torch.Tensor, chunk_rows: int, reduction: str) -> torch.Tensor:
        return model.head_loss(model.ln_f(x), targets, chunk_rows, reduction)

    head = torch.compile(head_fn, dynamic=False, mode=mode)

    def loss(ids: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 0,
             reduction: str = "mean") -> torch.Tensor:
        x = model.embed(ids)                                                   # (B, T, U), eager
        for block in blocks:
            x, _ = block(x)                                                    # one compiled graph each
        return head(x, targets, chunk_rows, reduction)

    return loss
