"""The PyTorch engine: `model` (GPT2 with SDPA attention, kv cache, chunked cross-entropy, the same tensor
names as the MXNet engine), `engine` (TorchEngine: bf16 autocast, torch.compile, fused AdamW, Horovod)."""
