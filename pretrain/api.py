"""KoGPT2-style Python API (`from pretrain.api import get_pytorch_model, ...`); the code, and the greedy
loop it keeps working, are in pretrain/interop/api.py."""
from pretrain.interop.api import get_mxnet_model, get_pytorch_model, get_sentencepiece_tokenizer, get_tokenizer

__all__ = ["get_mxnet_model", "get_pytorch_model", "get_sentencepiece_tokenizer", "get_tokenizer"]
