"""A Python API in the spirit of KoGPT2's own (`get_pytorch_kogpt2_model`, `get_mxnet_kogpt2_model`,
`get_tokenizer`): KoGPT2 v1's README loops run verbatim, only the loader lines changed:

    import torch
    from pretrain.api import get_pytorch_model, get_tokenizer     # was: kogpt2.pytorch_kogpt2 / kogpt2.utils
    from gluonnlp.data import SentencepieceTokenizer

    tok_path = get_tokenizer("work/demo/run/checkpoints")          # was: get_tokenizer()
    model, vocab = get_pytorch_model("work/demo/run/checkpoints")  # was: get_pytorch_kogpt2_model()
    tok = SentencepieceTokenizer(tok_path,  num_best=0, alpha=0)
    sent = '2019년 한해를 보내며,'
    toked = tok(sent)
    while 1:
      input_ids = torch.tensor([vocab[vocab.bos_token],]  + vocab[toked]).unsqueeze(0)
      pred = model(input_ids)[0]
      gen = vocab.to_tokens(torch.argmax(pred, axis=-1).squeeze().tolist())[-1]
      if gen == '</s>':
          break
      sent += gen.replace('▁', ' ')
      toked = tok(sent)

`model(input_ids)[0]` is (batch, length, vocab) logits for torch tensors (get_pytorch_model) and
for MXNet NDArrays (get_mxnet_model); `vocab` is a gluonnlp Vocab that knows the bos/eos/unk/pad tokens.
The loop's `[<s>] + pieces` input is the project's convention: every document in the shards starts
with `<s>` (docs/CONTRACTS.md), so the model was trained on exactly this.

gluonnlp 0.10's `SentencepieceTokenizer(tok_path, num_best=0, alpha=0)` fails under every sentencepiece
that installs on Python 3.11/3.12; each function here first applies the fix documented in
pretrain/interop/gluonnlp_fix.py (num_best 0/1 encodes without sampling, as gluonnlp documents).

What the loop prints: `gen.replace('▁', ' ')` is right for learned pieces and for the newline piece
(`\n`). A character outside the vocabulary (rare Hanja, emoji) comes out as 2-4 UTF-8 byte pieces
`<0xF0><0x9F>...`, which the loop appends as those literal names (and then re-tokenises as text);
`pretrain.generate` and `Tokenizer.decode` turn them back into the character.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from common.schema import S3Config
from pretrain.generate.inference import LoadedModel, load_model
from pretrain.interop.gluonnlp_fix import fix_sentencepiece_tokenizer


@lru_cache(maxsize=4)
def _load(checkpoint: str, engine: str, device: str, s3: Optional[S3Config]) -> LoadedModel:
    return load_model(checkpoint, engine=engine, device=device, s3cfg=s3)


def get_pytorch_model(checkpoint: str, device: str = "cpu", s3: Optional[S3Config] = None) -> tuple[Any, Any]:
    """(torch GPT-2 in eval mode, gluonnlp Vocab) from a checkpoint (step dir or root, local or s3://)."""
    fix_sentencepiece_tokenizer()
    lm = _load(checkpoint, "torch", device, s3)
    return lm.model, lm.tokenizer.gluonnlp_vocab()


def get_mxnet_model(checkpoint: str, ctx: Any = None, s3: Optional[S3Config] = None) -> tuple[Any, Any]:
    """(Gluon GPT-2, gluonnlp Vocab); `ctx` mx.cpu() (default) or mx.gpu(i)."""
    fix_sentencepiece_tokenizer()
    device = "gpu" if ctx is not None and getattr(ctx, "device_type", "cpu") == "gpu" else "cpu"
    lm = _load(checkpoint, "mxnet", device, s3)
    return lm.model, lm.tokenizer.gluonnlp_vocab()


def get_tokenizer(checkpoint: str, s3: Optional[S3Config] = None) -> str:
    """Path of the checkpoint's SentencePiece model, for gluonnlp's SentencepieceTokenizer (KoGPT2's
    `tok_path = get_tokenizer()`); also makes that class work here (gluonnlp_fix.py)."""
    fix_sentencepiece_tokenizer()
    return str(_load(checkpoint, "torch", "cpu", s3).tokenizer.model_path)


def get_sentencepiece_tokenizer(checkpoint: str, s3: Optional[S3Config] = None) -> Any:
    """gluonnlp `SentencepieceTokenizer` (text -> pieces) for the checkpoint's vocab, KoGPT2-style."""
    fix_sentencepiece_tokenizer()
    return _load(checkpoint, "torch", "cpu", s3).tokenizer.gluonnlp_tokenizer()
