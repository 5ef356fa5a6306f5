"""`EvalConfig`: the fine-tuning and evaluation settings of `python -m pretrain.evaluate` (one `--flag` per
field). Its own module so that the evaluation CLI and the fine-tuning loop both read it without importing
each other."""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.eval.tasks import TASKS


@dataclass
class EvalConfig:
    """Fine-tuning and evaluation settings (each field is a `--flag`, underscores as dashes)."""

    task: str = "nsmc"               # nsmc | paraphrase | perplexity
    checkpoint: str = ""             # step dir or checkpoint root, local or s3://
    data: str = ""                   # nsmc / paraphrase: the folder with the task's .txt files
    text: str = ""                   # perplexity: the held-out text file
    tokenizer: str = ""              # default: the checkpoint's own tokenizer/ folder
    out: str = "work/eval"           # results directory
    name: str = ""                   # row label in the table; default: the checkpoint's folder/step
    init: str = "pretrained"         # pretrained | scratch (same size and tokenizer, random weights)
    pooling: str = "last"            # last | mean (see the module docstring)
    lr: float = 5e-5                 # peak learning rate (AdamW)
    epochs: int = 3
    batch_size: int = 32             # examples per optimizer step
    max_length: int = 128            # tokens per input incl. </s>; capped at the model's context
    warmup: float = 0.1              # fraction of all steps spent warming up linearly
    weight_decay: float = 0.01
    clip_norm: float = 1.0           # 0 disables
    dropout: float = 0.1             # model and head dropout while fine-tuning
    seed: int = 1234
    max_train_examples: int = 0      # 0 = all; else a seeded random subset (quick runs)
    max_test_examples: int = 0       # 0 = all (the reported figure should use all)
    valid_fraction: float = 0.05     # NSMC: part of train held out for early stopping
    max_valid_examples: int = 0      # 0 = all; else a seeded subset (validation runs every epoch)
    eval_every: int = 0              # also validate every N steps (0 = once per epoch)
    patience: int = 0                # stop after N validations without improvement (0 = never)
    stride: int = 0                  # perplexity: window advance in tokens (0 = half the context)
    doc_sep: str = "line"            # perplexity: line | blank
    max_tokens: int = 0              # perplexity: score only the first N tokens (0 = all)
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "auto"          # auto (cuda: bf16 autocast, cpu: fp32) | fp32 | bf16

    def validate(self) -> None:
        if self.task not in (*TASKS, "perplexity"):
            raise SystemExit(f"--task {self.task}: use nsmc, paraphrase or perplexity")
        if not self.checkpoint:
            raise SystemExit("--checkpoint is required (a step directory or a checkpoint root)")
        if self.task == "perplexity" and not self.text:
            raise SystemExit("--task perplexity needs --text FILE (a held-out UTF-8 text file)")
        if self.task != "perplexity" and not self.data:
            raise SystemExit(f"--task {self.task} needs --data DIR (e.g. ../shared/data/"
                             f"{'nsmc' if self.task == 'nsmc' else 'qpair'})")
        checks = [(self.init in ("pretrained", "scratch"), "--init: pretrained or scratch"),
                  (self.pooling in ("last", "mean"), "--pooling: last or mean"),
                  (self.lr > 0 and self.epochs > 0 and self.batch_size > 0, "--lr/--epochs/--batch-size > 0"),
                  (self.max_length >= 4, "--max-length >= 4"), (0 <= self.warmup < 1, "--warmup in [0, 1)"),
                  (self.doc_sep in ("line", "blank"), "--doc-sep: line or blank"),
                  (self.device in ("auto", "cpu", "cuda"), "--device: auto, cpu or cuda"),
                  (self.precision in ("auto", "fp32", "bf16"), "--precision: auto, fp32 or bf16")]
        for ok, msg in checks:
            if not ok:
                raise SystemExit(msg)
