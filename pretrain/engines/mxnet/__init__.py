"""The MXNet/Gluon engine: `model` (GPT-2 HybridBlocks, fused erf-GELU, tied embeddings), `engine`
(MXNetEngine: fp16 with dynamic loss scaling, Horovod DistributedTrainer), `gpu` (which GPUs MXNet 1.9.1 can run)."""
