"""Fine-tuning machinery behind `python -m pretrain.evaluate`: inputs, classifier, training loop, perplexity.

The choices (last-token representation, input layout, optimizer, early stopping, sliding-window
perplexity) are explained in pretrain/eval/evaluate.py's docstring; the settings come from `EvalConfig` (eval/config.py).
"""
from __future__ import annotations

import logging
import math
import random
import time
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.schema import cpu_count
from pretrain.engines.torch.model import chunked_cross_entropy
from pretrain.eval.config import EvalConfig
from pretrain.eval.tasks import Example

log = logging.getLogger("pretrain.evaluate")


# ----------------------------------------------------------------------------------------------------
# inputs


def encode_examples(tok: Any, examples: Sequence[Example], max_length: int) -> list[list[int]]:
    """Token ids per example: `<s> a </s>` or `<s> a </s> b </s>` (a pretraining document's layout),
    at most `max_length` ids.

    Pairs are truncated longest-first so both sentences keep their beginnings.
    """
    eos = tok.eos_id
    head = [tok.bos_id] if tok.bos_id is not None else []
    a_ids = tok.encode_batch([e.text_a for e in examples], num_threads=cpu_count())
    if examples and examples[0].text_b is None:
        return [head + a[: max_length - 1 - len(head)] + [eos] for a in a_ids]
    b_ids = tok.encode_batch([e.text_b or "" for e in examples], num_threads=cpu_count())
    out = []
    for a, b in zip(a_ids, b_ids):
        la, lb = len(a), len(b)
        while la + lb > max_length - 2 - len(head):
            if la >= lb:
                la -= 1
            else:
                lb -= 1
        out.append(head + a[:la] + [eos] + b[:lb] + [eos])
    return out


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) int64 right-padded ids and (B,) int64 lengths, T = the longest sequence."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, lengths


def batch_order(lengths: Sequence[int], batch_size: int, rng: Optional[random.Random]) -> list[list[int]]:
    """Index batches. Training (rng given): shuffled, then sorted by length within pools of 50
    batches so a batch pads little, then the batch order shuffled. Evaluation: sorted by length."""
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i: i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    pool = batch_size * 50
    batches = []
    for p in range(0, len(idx), pool):
        chunk = sorted(idx[p: p + pool], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# ----------------------------------------------------------------------------------------------------
# the classifier


class SequenceClassifier(nn.Module):
    """GPT-2 body + pooled representation + dropout + linear head.

    forward(ids (B, T) int64, lengths (B,) int64) -> logits (B, num_labels) float32.
    """

    def __init__(self, gpt: nn.Module, units: int, num_labels: int = 2, pooling: str = "last",
                 dropout: float = 0.1):
        super().__init__()
        self.gpt = gpt
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(units, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)   # same init scale as the body's dense weights
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, _ = self.gpt.hidden(ids)                                       # (B, T, U)
        if self.pooling == "last":
            pooled = h[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        else:
            mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).to(h.dtype)
            pooled = (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)
        return self.head(self.dropout(pooled)).float()


def _optimizer(model: nn.Module, cfg: EvalConfig) -> torch.optim.Optimizer:
    """AdamW; decay on 2-D weights except position embeddings (as in pretraining, CONTRACTS.md)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and not name.endswith("wpe.weight") else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def _lr_at(step: int, total: int, cfg: EvalConfig) -> float:
    warm = int(total * cfg.warmup)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


@torch.no_grad()
def classify(model: SequenceClassifier, seqs: list[list[int]], labels: list[int], batch_size: int,
             pad_id: int, device: torch.device, amp: bool) -> dict:
    """Accuracy and mean cross-entropy (nats) of `model` on encoded examples, eval mode."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for b in batch_order([len(s) for s in seqs], batch_size * 2, None):
        ids, lengths = pad_batch([seqs[i] for i in b], pad_id)
        y = torch.tensor([labels[i] for i in b], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(ids.to(device), lengths.to(device))
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
    return {"accuracy": correct / len(seqs), "loss": loss_sum / len(seqs), "examples": len(seqs)}


def finetune(model: SequenceClassifier, train: tuple[list, list], valid: tuple[list, list], cfg: EvalConfig,
             pad_id: int, device: torch.device, amp: bool) -> dict:
    """Train `model` in place on (seqs, labels); restores the best-validation state. Returns the history."""
    rng = random.Random(cfg.seed)
    seqs, labels = train
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = _optimizer(model, cfg)
    history, best, best_state, stale, step = [], -1.0, None, 0, 0
    t0, tokens, loss_sum, loss_n, eval_s = time.perf_counter(), 0, 0.0, 0, 0.0
    lengths = [len(s) for s in seqs]

    def validate(epoch: float) -> bool:
        nonlocal best, best_state, stale, eval_s, loss_sum, loss_n
        te = time.perf_counter()
        v = classify(model, *valid, cfg.batch_size, pad_id, device, amp)
        eval_s += time.perf_counter() - te
        rec = {"epoch": round(epoch, 3), "step": step, "train_loss": loss_sum / max(1, loss_n),
               "valid_accuracy": v["accuracy"], "valid_loss": v["loss"], "elapsed_s": time.perf_counter() - t0}
        history.append(rec)
        loss_sum, loss_n = 0.0, 0          # train_loss: mean over the steps since the last validation
        log.info("epoch %.2f step %d: train loss %.4f nats, valid accuracy %.4f, valid loss %.4f nats, %.0f s",
                 epoch, step, rec["train_loss"], v["accuracy"], v["loss"], rec["elapsed_s"])
        if v["accuracy"] > best:
            best, stale = v["accuracy"], 0
            best_state = {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}
        else:
            stale += 1
        model.train()
        return bool(cfg.patience) and stale >= cfg.patience

    model.train()
    stop = False
    for epoch in range(cfg.epochs):
        for b in batch_order(lengths, cfg.batch_size, rng):
            ids, lens = pad_batch([seqs[i] for i in b], pad_id)
            y = torch.tensor([labels[i] for i in b], device=device)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, cfg)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(ids.to(device), lens.to(device))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            step += 1
            tokens += int(lens.sum())
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if cfg.eval_every and step % cfg.eval_every == 0 and step % steps_per_epoch:
                if stop := validate(step / steps_per_epoch):
                    break
        if stop or validate(epoch + 1):
            break
    train_s = time.perf_counter() - t0 - eval_s
    model.load_state_dict(best_state)
    return {"history": history, "best_valid_accuracy": best, "steps": step, "train_seconds": train_s,
            "valid_seconds": eval_s, "train_tokens_per_s": tokens / max(train_s, 1e-9)}


# ----------------------------------------------------------------------------------------------------
# perplexity


def read_documents(path: str, doc_sep: str) -> list[str]:
    """Non-empty lines (`line`) or blank-line separated paragraphs (`blank`) of a UTF-8 file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SystemExit(f"--text {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise SystemExit(f"--text {path}: not UTF-8 ({e}); convert it with iconv -f cp949 -t utf-8") from None
    if doc_sep == "line":
        docs = [ln.strip() for ln in text.splitlines()]
    else:
        docs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    docs = [d for d in docs if d]
    if not docs:
        raise SystemExit(f"--text {path}: no text in it")
    return docs


@torch.no_grad()
def perplexity(gpt: nn.Module, tok: Any, docs: Sequence[str], context: int, stride: int, device: torch.device,
               amp: bool, max_tokens: int = 0, batch_size: int = 8) -> dict:
    """Token perplexity of `docs`, each `<s> ids </s>` as in the shards, with a sliding window of `context`.

    The `<s>` after a `</s>` is not scored (it always follows: layout, not text), so the tokens scored
    are each document's ids and its `</s>`. Returns nll (mean nats per scored token), perplexity =
    exp(nll), tokens scored, and bits per character (total nats / ln 2 / characters of the
    documents: comparable across tokenizers).
    """
    bos = tok.bos_id
    stream = [tok.eos_id] if bos is None else []      # a model without <s>: the old `</s>`-joined stream
    for ids in tok.encode_batch(list(docs), num_threads=cpu_count()):
        stream += ([bos] if bos is not None else []) + ids + [tok.eos_id]
    if max_tokens:
        stream = stream[: max_tokens + 1]
    n_targets = len(stream) - 1
    # window w: inputs stream[s:s+context], scores targets stream[first+1 : s+context+1]
    windows, scored, start = [], 0, 0
    while scored < n_targets:
        end = min(start + context, n_targets)
        windows.append((start, end, scored))   # targets (1-based) scored+1 .. end
        scored = end
        start += stride
    gpt.eval()
    nll_sum = 0.0
    data = torch.tensor(stream, dtype=torch.long)
    for i in range(0, len(windows), batch_size):
        group = windows[i: i + batch_size]
        T = max(e - s for s, e, _ in group)
        ids = torch.full((len(group), T), tok.pad_id if tok.pad_id is not None else tok.eos_id,
                         dtype=torch.long)
        tgt = torch.full((len(group), T), -100, dtype=torch.long)
        for r, (s, e, first) in enumerate(group):
            ids[r, : e - s] = data[s:e]
            keep = slice(first - s, e - s)       # positions whose target was not scored before
            tgt[r, keep] = data[s + 1: e + 1][keep]
        if bos is not None:
            tgt[tgt == bos] = -100                  # <s> targets: layout, not scored
        keep = tgt >= 0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            h, _ = gpt.hidden(ids.to(device))                                 # (b, T, U)
            # only the scored positions go through the (U -> V) output layer, chunk by chunk
            nll_sum += chunked_cross_entropy(h[keep.to(device)], gpt.wte.weight, tgt[keep].to(device),
                                             reduction="sum").item()
    chars = sum(len(d) for d in docs) if not max_tokens else None
    n_scored = n_targets - (sum(1 for t in stream[1:] if t == bos) if bos is not None else 0)
    nll = nll_sum / n_scored
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": n_scored, "windows": len(windows),
            "context": context, "stride": stride,
            "bits_per_char": nll_sum / math.log(2) / chars if chars else None, "chars": chars}
