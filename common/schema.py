"""The config schema: one dataclass per section, one `Config` for a whole run.

A run's YAML (configs/*.yaml) holds every stage's section, so `make corpus`, `make tokenizer`,
`make shards` and `python -m pretrain.train` all read the same file. Paths are relative to the
directory the command runs in (the repo root when run through make).

Each section's `validate()` raises ConfigError naming the key and the fix; `load_config` prefixes the
file the key came from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from common.errors import ConfigError

# ----------------------------------------------------------------------------------------------------
# corpus stage


@dataclass
class InputSpec:
    """One input of the corpus stage: a path or glob, and how to read it (readers: corpus/readers/)."""

    path: str = ""
    format: str = "auto"        # auto | wiki | jsonl | text | nikl | aihub | namuwiki | parquet (auto: by name/content)
    source: str = ""            # name used in the manifest; default: the file stem
    encoding: str = "auto"      # auto | utf-8 | cp949 | euc-kr ...
    text_field: str = "text"    # jsonl: field holding the text, nested as "a.b"; parquet: the text column
    doc_sep: str = "line"       # text: "line" = one document per line, "blank" = blank-line separated
    json_path: str = ""         # aihub: where the text is in each JSON, e.g. "SJML.text[].content"
    utterance_form: str = "form"  # nikl spoken/messenger: "form" or "original_form" of each utterance
    pii: Optional[bool] = None  # PII -> <|rrn|> <|tel|> ... placeholders; default (null): on except wiki/namuwiki
    normalize_repeats: Optional[bool] = None   # ㅋㅋㅋㅋㅋ -> ㅋㅋㅋ ...; default: on except wiki/namuwiki
    drop_placeholders: Optional[bool] = None   # drop "(이름)", "&name&" ...; default: on for aihub and nikl

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("corpus.inputs[].path is empty: give a file, directory or glob")
        if self.format not in INPUT_FORMATS:
            raise ConfigError(f"corpus.inputs[].format={self.format!r}: use one of {', '.join(INPUT_FORMATS)}")
        if self.doc_sep not in ("line", "blank"):
            raise ConfigError(f"corpus.inputs[].doc_sep={self.doc_sep!r}: use line or blank")
        if self.utterance_form not in ("form", "original_form"):
            raise ConfigError(f"corpus.inputs[].utterance_form={self.utterance_form!r}: use form (the "
                              "normalized transcript) or original_form (as spoken/typed)")
        if not self.text_field or any(not p for p in self.text_field.split(".")):
            raise ConfigError(f"corpus.inputs[].text_field={self.text_field!r}: give a field name, nested with "
                              "dots (e.g. text or body.content)")
        if self.json_path:
            import re
            step = r"[^.\[\]]+(?:\[\])?"
            if not re.fullmatch(rf"{step}(?:\.{step})*", self.json_path):
                raise ConfigError(f"corpus.inputs[].json_path={self.json_path!r}: write keys separated by dots, "
                                  "with [] after a key holding a list, e.g. SJML.text[].content or "
                                  "named_entity[].content[].sentence")
        elif self.format == "aihub":
            raise ConfigError(f"corpus.inputs[] {self.path}: format aihub needs json_path, where the text is in "
                              "each JSON member, e.g. json_path: SJML.text[].content")
        if self.encoding != "auto":  # corpus stage: a typo here would otherwise surface per line
            import codecs
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(f"corpus.inputs[].encoding={self.encoding!r} is not a known codec: use auto, "
                                  "utf-8, cp949 or euc-kr") from None


INPUT_FORMATS = ("auto", "wiki", "jsonl", "text", "nikl", "aihub", "namuwiki", "parquet")


@dataclass
class FilterConfig:
    """Document-level filters; a document failing any is dropped and counted per filter."""

    min_chars: int = 20
    max_chars: int = 1_000_000
    min_hangul_ratio: float = 0.3        # Hangul syllables / non-space chars
    max_symbol_ratio: float = 0.3        # punctuation and symbols / non-space chars
    max_digit_ratio: float = 0.3
    max_char_repeat: int = 10            # a run of the same char longer than this is cut to this length
    max_dup_line_ratio: float = 0.3      # documents whose lines repeat more than this are dropped
    drop_boilerplate_lines: bool = True  # bylines, copyright notices, "무단 전재 및 재배포 금지", news datelines
    boilerplate_patterns: list[str] = field(default_factory=list)  # extra regexes for lines to drop

    def validate(self) -> None:
        for k in ("min_hangul_ratio", "max_symbol_ratio", "max_digit_ratio", "max_dup_line_ratio"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"corpus.filters.{k}={v}: must be a ratio between 0 and 1")
        if self.min_chars < 0 or self.max_chars < self.min_chars:
            raise ConfigError("corpus.filters: need 0 <= min_chars <= max_chars")


@dataclass
class DedupConfig:
    exact: bool = True           # drop documents whose normalized text hashes equal an earlier one
    near: bool = True            # MinHash/LSH near-duplicate removal
    num_perm: int = 64           # MinHash permutations
    threshold: float = 0.8       # estimated Jaccard similarity above which a document is a duplicate
    shingle_chars: int = 5       # character n-gram size
    min_chars: int = 50          # shorter documents only get exact dedup (MinHash is noisy on them)

    def validate(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"corpus.dedup.threshold={self.threshold}: must be in (0, 1]")
        if self.num_perm < 8:
            raise ConfigError(f"corpus.dedup.num_perm={self.num_perm}: use at least 8 (64-128 is typical)")


@dataclass
class CorpusConfig:
    inputs: list[InputSpec] = field(default_factory=list)
    out_dir: str = "work/clean"
    workers: int = 0             # 0 = all cores
    part_size_mb: int = 256      # uncompressed MB of text per output part
    sentence_splitter: str = "kiwi"  # kiwi (kiwipiepy) | regex
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)

    def validate(self) -> None:
        if self.sentence_splitter not in ("kiwi", "regex"):
            raise ConfigError(f"corpus.sentence_splitter={self.sentence_splitter!r}: use kiwi or regex")
        if self.part_size_mb <= 0:
            raise ConfigError("corpus.part_size_mb must be positive")


# ----------------------------------------------------------------------------------------------------
# tokenizer and token shards


@dataclass
class TokenizerConfig:
    """SentencePiece BPE training (`make tokenizer`); the choices are explained in corpus/tokenizer.py."""

    dir: str = "work/tokenizer"  # where spm.model, spm.vocab and tokenizer.json are written / read
    model: str = ""              # an existing SentencePiece model (e.g. KoGPT2's .spiece) to use instead
    vocab_size: int = 50_000
    sample_sentences: int = 2_000_000    # cap on sentences sampled for training: 50k BPE on 2 M trains in < 1 h (README "Scale")
    max_sentence_chars: int = 2048       # longer sentences are not sampled (counted in the report)
    character_coverage: float = 0.9999  # held-out byte-fallback rate: corpus/tokenizer.py
    byte_fallback: bool = True
    normalization: str = "identity"      # corpus stage already applied NFC; see corpus/tokenizer.py
    num_unused: int = 100                # reserved <unused0..N-1> slots
    threads: int = 0                     # 0 = all cores (sentence splitting processes, SentencePiece threads)
    seed: int = 1234
    report_docs: int = 2000              # held-out (validation-split) documents the report is measured on

    def validate(self) -> None:
        if self.vocab_size < 64 or self.vocab_size > 65_535:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size}: must be in [64, 65535] "
                              "(token shards store uint16 ids)")
        if self.sample_sentences <= 0 or self.max_sentence_chars <= 0:
            raise ConfigError("tokenizer.sample_sentences and tokenizer.max_sentence_chars must be positive")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(f"tokenizer.character_coverage={self.character_coverage}: must be in (0, 1]")
        if self.normalization not in ("identity", "nfkc", "nmt_nfkc", "nfkc_cf", "nmt_nfkc_cf"):
            raise ConfigError(f"tokenizer.normalization={self.normalization!r}: use identity (recommended "
                              "for Korean), nfkc, nmt_nfkc, nfkc_cf or nmt_nfkc_cf")
        if self.num_unused < 0 or self.threads < 0 or self.report_docs < 0:
            raise ConfigError("tokenizer.num_unused, tokenizer.threads and tokenizer.report_docs must be >= 0")


@dataclass
class ShardsConfig:
    """Token shards (`make shards`): formats in docs/CONTRACTS.md, code in corpus/shards/."""

    out_dir: str = "work/shards"
    valid_fraction: float = 0.005   # fraction of documents held out for validation (by seeded hash of id)
    seed: int = 1234
    shard_tokens: int = 500_000_000  # max tokens per .bin file
    workers: int = 0                 # 0 = all cores
    batch_chars: int = 4_000_000     # characters of text encoded per batch in a worker (bounds its memory)

    def validate(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"shards.valid_fraction={self.valid_fraction}: must be in [0, 1)")
        if self.shard_tokens <= 0 or self.batch_chars <= 0 or self.workers < 0:
            raise ConfigError("shards.shard_tokens and shards.batch_chars must be positive, shards.workers >= 0")


# ----------------------------------------------------------------------------------------------------
# model and training

MODEL_PRESETS: dict[str, dict] = {
    # name: num_layers, units, num_heads, max_length
    "base": dict(num_layers=12, units=768, num_heads=12, max_length=1024),   # GPT-2 base / KoGPT2
    "small": dict(num_layers=6, units=512, num_heads=8, max_length=512),
    "demo": dict(num_layers=4, units=256, num_heads=4, max_length=128),
    "tiny": dict(num_layers=2, units=64, num_heads=4, max_length=64),
}


@dataclass
class ModelConfig:
    """GPT-2 hyperparameters. Unset sizes come from `preset`; `vocab_size: 0` = the tokenizer's."""

    preset: str = "base"
    num_layers: Optional[int] = None
    units: Optional[int] = None
    num_heads: Optional[int] = None
    max_length: Optional[int] = None
    hidden_size: Optional[int] = None   # FFN inner size; default 4 * units
    vocab_size: int = 0
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.validate()  # fill sizes from the preset even when built from defaults

    def validate(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ConfigError(f"model.preset={self.preset!r}: choose one of {', '.join(MODEL_PRESETS)}")
        for k, v in MODEL_PRESETS[self.preset].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.hidden_size is None:
            self.hidden_size = 4 * self.units
        if self.units % self.num_heads:
            raise ConfigError(f"model.units={self.units} must be divisible by model.num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout}: must be in [0, 1)")


@dataclass
class OptimConfig:
    lr: float = 2.5e-4
    min_lr: float = 2.5e-5
    weight_decay: float = 0.01      # not applied to biases, LayerNorm and position/token embeddings' ... see optim
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 2000
    schedule: str = "cosine"        # cosine | linear | constant (after warmup)
    clip_norm: float = 1.0          # global L2 norm of the averaged gradient; 0 disables
    fused: "bool | str" = "auto"    # torch engine: fused AdamW kernel. auto = on CUDA only; true = any device
                                    # (torch >= 2.4 has a CPU kernel); false = the for-each implementation

    def validate(self) -> None:
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"optim.schedule={self.schedule!r}: use cosine, linear or constant")
        self.fused = _tristate(self.fused, "optim.fused")


@dataclass
class TrainConfig:
    engine: str = "auto"            # auto | mxnet | torch. auto: mxnet where it is installed and every visible GPU
                                    # has compute capability <= 8.6 (or on the CPU), else torch (pretrain/engines/choice.py)
    out_dir: str = "work/run"       # metrics.jsonl, tensorboard/, config.yaml
    shards: str = ""                # token shards to train on; "" = shards.out_dir
    seq_len: int = 0                # 0 = model.max_length
    global_batch: int = 512         # sequences per optimizer step, all workers together
    micro_batch: int = 8            # sequences per worker per forward/backward
    max_steps: int = 100_000
    stop_after: int = 0             # stop (after a checkpoint) at this step though max_steps is later; 0 = off.
                                    # The schedule still runs to max_steps: for fixed-length job slots and the demo
    precision: str = "auto"         # auto (GPU: fp16 for mxnet, bf16 for torch; CPU: fp32) | fp32 | fp16 | bf16
    init_loss_scale: float = 2.0 ** 16
    seed: int = 1234
    log_every: int = 10
    eval_every: int = 1000
    eval_batches: int = 50          # micro-batches per evaluation, all workers together (split across
                                    # them), so the validation set does not depend on the worker count
    compile: "bool | str" = "auto"  # torch engine: torch.compile per transformer block. auto = on CUDA only;
                                    # true = on any device (the CPU too: inductor + gcc); false = eager
    compile_scope: str = "block"    # block: each transformer block compiled on its own, so Horovod's per-gradient
                                    # allreduces start during the backward; model: the whole loss in one graph
    grad_compression: str = "none"  # none | fp16: gradients cast to fp16 for the allreduce (Horovod Compression.fp16)
    pad_vocab_multiple: int = 64    # torch engine: output matmul over the vocab padded to a multiple of this
                                    # (50,000 -> 50,048; masked, never in checkpoints); 0 = off
    device: str = "auto"            # auto | cpu | gpu

    def validate(self) -> None:
        if self.engine not in ("auto", "mxnet", "torch"):
            raise ConfigError(f"train.engine={self.engine!r}: use auto, mxnet or torch (torch for Hopper GPUs)")
        self.compile = _tristate(self.compile, "train.compile")
        if self.compile_scope not in ("block", "model"):
            raise ConfigError(f"train.compile_scope={self.compile_scope!r}: use block (overlaps Horovod's "
                              "allreduces with the backward) or model")
        if self.grad_compression not in ("none", "fp16"):
            raise ConfigError(f"train.grad_compression={self.grad_compression!r}: use none or fp16")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"train.precision={self.precision!r}: use auto, fp32, fp16 or bf16")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ConfigError(f"train.device={self.device!r}: use auto, cpu or gpu")
        if self.micro_batch <= 0 or self.global_batch <= 0:
            raise ConfigError("train.micro_batch and train.global_batch must be positive")

    def accumulation(self, workers: int) -> int:
        """Micro-batches per worker per step; global_batch must equal micro_batch x accum x workers."""
        per = self.micro_batch * workers
        if self.global_batch % per:
            raise ConfigError(
                f"train.global_batch={self.global_batch} is not a multiple of train.micro_batch="
                f"{self.micro_batch} x {workers} workers = {per}. Pick a global_batch that is, e.g. "
                f"{max(1, round(self.global_batch / per)) * per}, or change train.micro_batch.")
        return self.global_batch // per


@dataclass
class S3Config:
    """Where `s3://` checkpoint roots live. Credentials come only from the standard AWS chain."""

    endpoint_url: str = ""          # "" = AWS; e.g. http://minio:9000 for MinIO/Ceph RGW
    region: str = ""
    profile: str = ""
    max_concurrency: int = 8
    multipart_chunk_mb: int = 64
    max_attempts: int = 10
    retry_mode: str = "adaptive"    # standard | adaptive

    def validate(self) -> None:
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise ConfigError(f"checkpoint.s3.retry_mode={self.retry_mode!r}: use standard or adaptive")


@dataclass
class CheckpointConfig:
    root: str = "work/run/checkpoints"  # local directory or s3://bucket/prefix
    every_steps: int = 1000
    keep_last: int = 3
    resume: str = "auto"               # auto | none | PATH (a step directory or root, local or s3://)
    init_from: str = ""                # weights only: fresh optimizer and schedule
    async_upload: bool = True          # snapshot locally, upload in the background
    staging_dir: str = ""              # local snapshot dir for async S3 uploads; "" = <out_dir>/staging
    node_cache_dir: str = ""           # node-local dir where local rank 0 downloads an S3 checkpoint to resume
                                       # from, for all ranks of its node; "" = <system temp dir>/kogpt-resume-<uid>
    stall_warn_s: float = 60.0         # warn while a checkpoint write has moved no byte for this long
    s3: S3Config = field(default_factory=S3Config)

    def validate(self) -> None:
        if self.keep_last < 1:
            raise ConfigError("checkpoint.keep_last must be >= 1")
        if self.resume not in ("auto", "none") and not self.resume:
            raise ConfigError("checkpoint.resume must be auto, none or a checkpoint path")
        if not self.stall_warn_s > 0:
            raise ConfigError(f"checkpoint.stall_warn_s={self.stall_warn_s}: must be > 0 seconds (e.g. 60)")


@dataclass
class LogConfig:
    tensorboard: bool = True
    level: str = "INFO"


@dataclass
class Config:
    """A whole run: every stage reads its section from the same file."""

    name: str = "run"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        if not self.train.shards:
            self.train.shards = self.shards.out_dir
        seq = self.train.seq_len or self.model.max_length
        if seq > self.model.max_length:
            raise ConfigError(f"train.seq_len={seq} exceeds model.max_length={self.model.max_length}")


def _tristate(value: "bool | str", key: str) -> "bool | str":
    """auto | true | false (YAML booleans or the strings) -> "auto", True or False."""
    if isinstance(value, bool) or value == "auto":
        return value
    low = str(value).strip().lower()
    if low in ("true", "false", "auto"):
        return {"true": True, "false": False, "auto": "auto"}[low]
    raise ConfigError(f"{key}={value!r}: use auto, true or false")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
