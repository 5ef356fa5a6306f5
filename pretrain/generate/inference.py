"""Load a trained checkpoint (local or s3://) into either engine's model for inference.

    lm = load_model("work/demo/run/checkpoints", engine="torch")   # newest complete checkpoint
    logits, past = lm.step(np.array([[1, 345, 67]]))               # (1, 3, V) and the kv cache
    logits, past = lm.step(np.array([[89]]), past)                  # one more position, cached

Checkpoints are engine-neutral: a model trained with `engine: mxnet` loads in torch and back.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common.config import build
from common.schema import ModelConfig, S3Config
from corpus.tokenizer import Tokenizer
from pretrain.checkpoint import Checkpoint, load_checkpoint, split_location
from pretrain.checkpoint.storage import open_storage


def model_config_from_state(state: dict, where: str) -> ModelConfig:
    """The ModelConfig recorded in a checkpoint's state.json."""
    raw = state.get("model")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}/state.json has no 'model' section: not a checkpoint of this project")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return build(ModelConfig, {k: v for k, v in raw.items() if k in known}, f"{where}/state.json", "model")


def fetch_tokenizer(location: str, dest: str | os.PathLike, s3cfg: Optional[S3Config] = None) -> Tokenizer:
    """Copy the checkpoint's `tokenizer/` folder (a checkpoint is self-contained) to `dest`; load it."""
    root, name = split_location(location)
    storage = open_storage(root, s3cfg or S3Config())
    try:
        files = [k for k in storage.list(f"{name}/tokenizer/")]
        if not files:
            raise FileNotFoundError(f"{location} has no tokenizer/ folder: it was written without a "
                                    "tokenizer; pass --tokenizer PATH")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for key in files:
            storage.get_file(key, str(dest / key.rpartition("/")[2]))
    finally:
        storage.close()
    return Tokenizer.load(dest)


@dataclass
class LoadedModel:
    """A model ready for decoding: `step(ids, past) -> (logits (B, T, V) float32 numpy, past)`."""

    engine: str
    model: Any                 # GPT2 (torch.nn.Module) or GPT2Model (gluon HybridBlock)
    tokenizer: Tokenizer
    model_cfg: ModelConfig
    checkpoint: str
    step_count: int
    device: Any = None

    def step(self, ids: np.ndarray, past: Any = None) -> tuple[np.ndarray, Any]:
        """Run `ids` (B, T) int after the cached positions `past` (None: from the start)."""
        if self.engine == "torch":
            import torch
            with torch.no_grad():
                x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)
                logits, present = self.model(x, past=past)
            return logits.float().cpu().numpy(), present
        import mxnet as mx
        x = mx.nd.array(np.asarray(ids), ctx=self.device, dtype="int32")
        logits, present = self.model(x, past) if past is not None else self.model(x)
        return logits.astype("float32").asnumpy(), present


def build_inference_model(engine: str, weights: dict[str, np.ndarray], model_cfg: ModelConfig,
                          vocab_size: int, device: str = "cpu") -> tuple[Any, Any]:
    """(model in eval mode with `weights` loaded, its device) for `engine` ('torch' or 'mxnet')."""
    if engine == "torch":
        import torch
        from pretrain.engines.torch.model import GPT2, GPT2Shape
        dev = torch.device("cuda" if device in ("gpu", "cuda") else "cpu")
        model = GPT2(GPT2Shape.from_config(model_cfg, vocab_size))
        missing = set(model.state_dict()) ^ set(weights)
        if missing:
            raise ValueError(f"checkpoint tensors do not match the model: {sorted(missing)[:5]} ...")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
        return model.to(dev).eval(), dev
    if engine == "mxnet":
        import mxnet as mx
        from pretrain.engines.mxnet.model import build_model, param_map
        ctx = mx.gpu(0) if device in ("gpu", "cuda") else mx.cpu()
        cfg = dataclasses.replace(model_cfg, dropout=0.0)
        model = build_model(cfg, vocab_size)
        model.initialize(ctx=ctx)
        params = param_map(model)
        extra = set(params) ^ set(weights)
        if extra:
            raise ValueError(f"checkpoint tensors do not match the model: {sorted(extra)[:5]} ...")
        for name, p in params.items():
            p.set_data(mx.nd.array(weights[name], ctx=ctx))
        return model, ctx
    raise ValueError(f"engine={engine!r}: use torch or mxnet")


def open_checkpoint(checkpoint: str, s3cfg: Optional[S3Config] = None, tokenizer: Optional[str] = None,
                    tok_dir: Optional[str] = None) -> tuple[Checkpoint, ModelConfig, Tokenizer, int]:
    """(checkpoint, its ModelConfig, its tokenizer, embedding rows) for inference and fine-tuning.

    The tokenizer is `tokenizer` if given, else the checkpoint's own `tokenizer/`, copied to `tok_dir`
    (a new temporary directory when None). Raises ValueError when the tokenizer does not fit the model.
    """
    ckpt: Checkpoint = load_checkpoint(str(checkpoint), s3cfg)
    model_cfg = model_config_from_state(ckpt.state, ckpt.location)
    if tokenizer:
        tok = Tokenizer.load(tokenizer)
    else:
        tok = fetch_tokenizer(ckpt.location, tok_dir or tempfile.mkdtemp(prefix="kogpt-tok-"), s3cfg)
    vocab_size = int(ckpt.weights["wte.weight"].shape[0])
    if tok.vocab_size > vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} pieces but {ckpt.location} embeds {vocab_size}: "
                         "use the tokenizer the checkpoint was trained with")
    return ckpt, model_cfg, tok, vocab_size


def load_model(checkpoint: str, engine: str = "torch", device: str = "cpu",
               s3cfg: Optional[S3Config] = None, tokenizer: Optional[str] = None) -> LoadedModel:
    """Load the checkpoint at `checkpoint` (a step dir, or a root: its newest complete one)."""
    ckpt, model_cfg, tok, vocab_size = open_checkpoint(checkpoint, s3cfg, tokenizer)
    model, dev = build_inference_model(engine, ckpt.weights, model_cfg, vocab_size, device)
    return LoadedModel(engine, model, tok, model_cfg, ckpt.location, ckpt.step, dev)
