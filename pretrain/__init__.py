"""GPT-2 pretraining on the token shards, and what comes after.

Packages: `train` (python -m pretrain.train), `checkpoint` (local and S3 checkpoints), `engines` (the
same model in MXNet and PyTorch), `generate` (python -m pretrain.generate), `eval` (python -m
pretrain.evaluate), `interop` (Hugging Face export/import, KoGPT2 v1 conversion, the KoGPT2-style API).
Thin modules keep the entry points users type: `pretrain.export`, `pretrain.convert`,
`pretrain.evaluate`, `pretrain.api`.
"""
