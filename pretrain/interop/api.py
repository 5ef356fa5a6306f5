"""A Python API in the spirit of KoGPT2's own (`get_pytorch_kogpt2_model`, `get_mxnet_kogpt2_model`).

    from pretrain.api import get_pytorch_model, get_sentencepiece_tokenizer

    model, vocab = get_pytorch_model("work/demo/run/checkpoints")
    tok = get_sentencepiece_tokenizer("work/demo/run/checkpoints")
    sent = "2019년 한해를 보내며,"
    toked = tok(sent)
    while True:
        input_ids = torch.tensor([vocab[vocab.bos_token]] + vocab[toked]).unsqueeze(0)
        pred = model(input_ids)[0]                          # (1, T, V) logits
        gen = vocab.to_tokens(torch.argmax(pred, axis=-1).squeeze().tolist())[-1]
        if gen == "</s>":
            break
        sent += gen.replace("▁", " ")
        toked = tok(sent)

`model(input_ids)[0]` is (batch, length, vocab) logits for torch tensors (get_pytorch_model) and
for MXNet NDArrays (get_mxnet_model), so a greedy loop written against KoGPT2 runs unchanged; `vocab`
is a gluonnlp Vocab that knows the bos/eos/unk/pad tokens.

`get_sentencepiece_tokenizer` is gluonnlp's `SentencepieceTokenizer(path, num_best=0, alpha=0)` as
KoGPT2's examples build it, except that it also works with sentencepiece >= 0.1.9x (gluonnlp 0.10
calls the sampling encoder even for num_best=0, which those versions reject).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from common.schema import S3Config
from pretrain.generate.inference import LoadedModel, load_model


@lru_cache(maxsize=4)
def _load(checkpoint: str, engine: str, device: str, s3: Optional[S3Config]) -> LoadedModel:
    return load_model(checkpoint, engine=engine, device=device, s3cfg=s3)


def get_pytorch_model(checkpoint: str, device: str = "cpu", s3: Optional[S3Config] = None) -> tuple[Any, Any]:
    """(torch GPT-2 in eval mode, gluonnlp Vocab) from a checkpoint (step dir or root, local or s3://)."""
    lm = _load(checkpoint, "torch", device, s3)
    return lm.model, lm.tokenizer.gluonnlp_vocab()


def get_mxnet_model(checkpoint: str, ctx: Any = None, s3: Optional[S3Config] = None) -> tuple[Any, Any]:
    """(Gluon GPT-2, gluonnlp Vocab); `ctx` mx.cpu() (default) or mx.gpu(i)."""
    device = "gpu" if ctx is not None and getattr(ctx, "device_type", "cpu") == "gpu" else "cpu"
    lm = _load(checkpoint, "mxnet", device, s3)
    return lm.model, lm.tokenizer.gluonnlp_vocab()


def get_tokenizer(checkpoint: str, s3: Optional[S3Config] = None) -> str:
    """Path of the checkpoint's SentencePiece model, for gluonnlp's SentencepieceTokenizer."""
    return str(_load(checkpoint, "torch", "cpu", s3).tokenizer.model_path)


def get_sentencepiece_tokenizer(checkpoint: str, s3: Optional[S3Config] = None) -> Any:
    """gluonnlp `SentencepieceTokenizer` (text -> pieces) for the checkpoint's vocab, KoGPT2-style."""
    return _load(checkpoint, "torch", "cpu", s3).tokenizer.gluonnlp_tokenizer()
