"""Text generation: `python -m pretrain.generate --checkpoint PATH --prompt TEXT`.

Modules: `inference` (checkpoint -> model config, tokenizer and an engine's model ready to run:
LoadedModel, load_model, open_checkpoint), `sampling` (greedy, temperature, top-k/top-p, repetition
penalty), `cli` (the loop with the kv cache: generate_ids, generate_text, and the command line).
"""
from pretrain.generate.cli import generate_ids, generate_sample, generate_text, main, non_text_ids
from pretrain.generate.inference import LoadedModel, load_model, open_checkpoint
from pretrain.generate.sampling import SamplingConfig, next_token

__all__ = ["LoadedModel", "SamplingConfig", "generate_ids", "generate_sample", "generate_text", "load_model", "main",
           "next_token", "non_text_ids", "open_checkpoint"]
