"""Downstream evaluation as in KoGPT2's table: fine-tune on NSMC / question pairs, and perplexity.

    python -m pretrain.evaluate --checkpoint work/run/checkpoints --task nsmc --data ../shared/data/nsmc
    python -m pretrain.evaluate --checkpoint CKPT --task paraphrase --data ../shared/data/qpair --epochs 5
    python -m pretrain.evaluate --checkpoint CKPT --task perplexity --text heldout.txt
    python -m pretrain.evaluate --checkpoint CKPT --task nsmc --data DIR --init scratch   # baseline

`--checkpoint` is a step directory or a checkpoint root (its newest complete step), local or s3://.
Checkpoints are engine-neutral, so whatever engine trained them, fine-tuning runs the PyTorch model
(pretrain/engines/torch/model.py) on CPU, or on CUDA with bf16 autocast.

Representation: last token. Each input is `<s> text </s>` (pairs: `<s> s1 </s> s2 </s>`), the layout of a
pretraining document (docs/CONTRACTS.md), and the classifier
reads the final hidden state (after ln_f) at the last `</s>`. In a causal model only that position has
attended to the whole input; a mean over positions mixes in early states that saw only a prefix (the
first token's state knows one token), which dilutes the signal. `</s>` is the token that ends every
document in pretraining, so its state is the model's summary of "a finished text" (GPT-1 classifies
from an appended end token the same way). `--pooling mean` is there to compare. Inputs are right-padded:
causal attention never lets a real position see a later pad, so no attention mask is needed.

Head: dropout + one linear layer (units -> 2) on the pooled state, trained with the whole body (full
fine-tuning): AdamW, linear warmup then linear decay, weight decay on 2-D weights only, gradient
clipping. Validation accuracy is measured after every epoch (and every `--eval-every` steps); the
best state is restored before the test split is scored once. NSMC has no validation file, so
`--valid-fraction` of its train split is held out with `--seed`.

Perplexity: the file's non-empty lines are documents (`--doc-sep blank`: blank-line separated), each
`<s> ids </s>` as in the shards; every id and every `</s>` is scored, the `<s>` (which always follows
a `</s>`) is not.
Windows of the model's context length advance by `--stride` tokens; each token is scored once, with
at least `context - stride` tokens of context (except in the first window).

Every run writes `<out>/<task>-<name>.json` (config, per-epoch history, timings) and updates the table
`<out>/results.json` + `<out>/results.md` (one row per checkpoint x task x init x pooling).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from common.io import read_json, write_bytes_atomic, write_json_atomic
from common.log import setup_logging
from pretrain.eval.config import EvalConfig
from pretrain.eval.tasks import DataError, TASKS, label_counts, load_task
from pretrain.engines.torch.model import GPT2, GPT2Shape
from pretrain.eval.finetune import (SequenceClassifier, classify, encode_examples, finetune, perplexity,
                               read_documents)

log = logging.getLogger("pretrain.evaluate")

# KoGPT2's published table (test accuracy), shown beside our rows in results.md.
REFERENCE = {
    "nsmc": [("KoGPT2 (SKT)", 0.899), ("KoBERT", 0.901), ("multilingual BERT", 0.875)],
    "paraphrase": [("KoGPT2 (SKT)", 0.943), ("KoBERT", 0.911)],
}


# ----------------------------------------------------------------------------------------------------
# checkpoint -> PyTorch model


def load_model(cfg: EvalConfig) -> tuple[GPT2, Any, dict]:
    """(model on CPU, tokenizer, info) from `cfg.checkpoint`; random weights when cfg.init == scratch."""
    from pretrain.generate.inference import open_checkpoint

    # the checkpoint's own tokenizer/ (local or s3://) is read into memory at load: a temporary copy does
    with tempfile.TemporaryDirectory(prefix="kogpt-eval-tok-") as d:
        try:
            ckpt, model_cfg, tok, vocab_size = open_checkpoint(cfg.checkpoint, tokenizer=cfg.tokenizer or None,
                                                               tok_dir=d)
        except ValueError as e:
            raise SystemExit(f"{e} (--tokenizer)") from None
    shape = dataclasses.replace(GPT2Shape.from_config(model_cfg, vocab_size), dropout=cfg.dropout)
    torch.manual_seed(cfg.seed)
    model = GPT2(shape)
    if cfg.init == "pretrained":
        model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in ckpt.weights.items()},
                              strict=True)
    info = {"checkpoint": ckpt.location, "step": ckpt.step, "tokens_seen": ckpt.state.get("tokens_seen"),
            "engine": ckpt.state.get("engine"), "params": model.num_params(),
            "shape": dataclasses.asdict(shape), "tokenizer_sha256": tok.sha256}
    return model, tok, info


def pick_device(cfg: EvalConfig) -> tuple[torch.device, bool]:
    """(device, bf16 autocast on?)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to PyTorch; use --device cpu")
    dev = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                       else "cpu")
    amp = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    return dev, amp


# ----------------------------------------------------------------------------------------------------
# results table


def _row_key(r: dict) -> tuple:
    return (r["name"], r["task"], r["init"], r.get("pooling"))


def update_table(out_dir: str, row: dict) -> None:
    """Insert/replace `row` in <out>/results.json and rewrite <out>/results.md."""
    path = os.path.join(out_dir, "results.json")
    rows = read_json(path)["rows"] if os.path.isfile(path) else []
    rows = [r for r in rows if _row_key(r) != _row_key(row)] + [row]
    rows.sort(key=lambda r: (r["task"], r["name"], r["init"]))
    write_json_atomic(path, {"format": "kogpt-eval-v1", "rows": rows})
    write_bytes_atomic(os.path.join(out_dir, "results.md"), render_markdown(rows).encode("utf-8"))


def render_markdown(rows: list[dict]) -> str:
    lines = ["# Downstream evaluation", "",
             "| model | step | params | task | init | pooling | metric | value | scored on | fine-tuned on |",
             "|---|---:|---:|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        metric = "perplexity" if r["task"] == "perplexity" else "test accuracy"
        value = r["perplexity"] if r["task"] == "perplexity" else r["test_accuracy"]
        size = f"{r['tokens']} tokens" if r["task"] == "perplexity" else f"{r['test_examples']} examples"
        lines.append(f"| {r['name']} | {r.get('step', '')} | {r.get('params', 0) / 1e6:.1f}M | {r['task']} | "
                     f"{r['init']} | {r.get('pooling') or ''} | {metric} | {value:.4f} | "
                     f"{size} | {r['train_examples'] if 'train_examples' in r else '-'} |")
    lines += ["", "Reference (KoGPT2's published table, test accuracy, full data, GPT-2 base size):", "",
              "| model | nsmc | paraphrase |", "|---|---:|---:|"]
    names = dict.fromkeys(n for rs in REFERENCE.values() for n, _ in rs)
    for n in names:
        vals = [next((f"{v:.3f}" for m, v in REFERENCE[t] if m == n), "-") for t in ("nsmc", "paraphrase")]
        lines.append(f"| {n} | {vals[0]} | {vals[1]} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# entry point


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: EvalConfig) -> dict:
    """Evaluate as configured; writes the per-run JSON and updates the results table. Returns the row."""
    cfg.validate()
    _seed_everything(cfg.seed)
    device, amp = pick_device(cfg)
    t0 = time.perf_counter()
    gpt, tok, info = load_model(cfg)
    name = cfg.name or f"{os.path.basename(os.path.dirname(info['checkpoint'].rstrip('/')))}/" \
                       f"{os.path.basename(info['checkpoint'].rstrip('/'))}"
    row: dict[str, Any] = {"name": name, "task": cfg.task, "init": cfg.init,
                           "step": info["step"] if cfg.init == "pretrained" else 0,   # scratch: no pretraining
                           "params": info["params"], "device": str(device), "precision": "bf16" if amp else "fp32"}
    context = gpt.shape.max_length
    if cfg.task == "perplexity":
        row["pooling"] = None
        docs = read_documents(cfg.text, cfg.doc_sep)
        stride = cfg.stride or max(1, context // 2)
        if not 0 < stride <= context:
            raise SystemExit(f"--stride {stride}: must be in [1, {context}] (the model's context)")
        res = perplexity(gpt.to(device), tok, docs, context, stride, device, amp, cfg.max_tokens)
        row.update(res, text=cfg.text, docs=len(docs))
        log.info("perplexity %.3f over %d tokens (%.4f nats/token, %s bits/char) with context %d, stride %d",
                 res["perplexity"], res["tokens"], res["nll"],
                 f"{res['bits_per_char']:.4f}" if res["bits_per_char"] else "n/a", context, stride)
    else:
        row["pooling"] = cfg.pooling
        splits = load_task(cfg.task, cfg.data, cfg.valid_fraction, cfg.seed)
        rng = random.Random(cfg.seed)
        if cfg.max_train_examples and cfg.max_train_examples < len(splits["train"]):
            splits["train"] = rng.sample(splits["train"], cfg.max_train_examples)
        if cfg.max_valid_examples and cfg.max_valid_examples < len(splits["valid"]):
            splits["valid"] = random.Random(cfg.seed + 1).sample(splits["valid"], cfg.max_valid_examples)
        if cfg.max_test_examples and cfg.max_test_examples < len(splits["test"]):
            splits["test"] = random.Random(cfg.seed + 2).sample(splits["test"], cfg.max_test_examples)
        max_len = min(cfg.max_length, context)
        enc = {k: (encode_examples(tok, v, max_len), [e.label for e in v]) for k, v in splits.items()}
        for k, v in splits.items():
            lens = [len(s) for s in enc[k][0]]
            log.info("%s %s: %d examples, labels %s, mean %.1f tokens, %.1f%% truncated at %d", cfg.task, k,
                     len(v), label_counts(v), float(np.mean(lens)), 100.0 * np.mean([n >= max_len for n in lens]),
                     max_len)
        model = SequenceClassifier(gpt, gpt.shape.units, TASKS[cfg.task].num_labels, cfg.pooling, cfg.dropout)
        model.to(device)
        pad = tok.pad_id if tok.pad_id is not None else tok.eos_id   # never attended to: any valid id
        fit = finetune(model, enc["train"], enc["valid"], cfg, pad, device, amp)
        test = classify(model, *enc["test"], cfg.batch_size, pad, device, amp)
        log.info("%s %s (%s): test accuracy %.4f on %d examples (best valid %.4f)", name, cfg.task, cfg.init,
                 test["accuracy"], test["examples"], fit["best_valid_accuracy"])
        row.update(test_accuracy=test["accuracy"], test_loss=test["loss"], test_examples=test["examples"],
                   best_valid_accuracy=fit["best_valid_accuracy"], valid_examples=len(enc["valid"][0]),
                   train_examples=len(enc["train"][0]), steps=fit["steps"], train_seconds=fit["train_seconds"],
                   valid_seconds=fit["valid_seconds"],
                   train_tokens_per_s=fit["train_tokens_per_s"], data=cfg.data)
        row["history"] = fit["history"]
    row["seconds"] = time.perf_counter() - t0
    detail = dict(row, config=dataclasses.asdict(cfg), model=info)
    os.makedirs(cfg.out, exist_ok=True)
    safe = name.replace("/", "_").replace(":", "_")
    write_json_atomic(os.path.join(cfg.out, f"{cfg.task}-{safe}-{cfg.init}.json"), detail)
    update_table(cfg.out, {k: v for k, v in row.items() if k != "history"})
    return row


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pretrain.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(EvalConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(f.default), default=f.default, dest=f.name)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = vars(build_parser().parse_args(argv))
    setup_logging(getattr(logging, args.pop("log_level").upper(), logging.INFO))
    cfg = EvalConfig(**args)
    try:
        row = run(cfg)
    except DataError as e:
        log.error("%s", e)
        return 2
    print(json.dumps({k: v for k, v in row.items() if k != "history"}, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
