"""Other formats and other people's code: `hf` (checkpoint <-> Hugging Face GPT2LMHeadModel directory and
tokenizer, `python -m pretrain.export`), `kogpt2` (KoGPT2 v1 `.params` <-> checkpoint,
`python -m pretrain.convert`), `api` (KoGPT2-style Python API: get_pytorch_model, get_mxnet_model,
get_tokenizer, get_sentencepiece_tokenizer; also importable as `pretrain.api`)."""
