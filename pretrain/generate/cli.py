"""Generate Korean text from a checkpoint, with either engine.

    python -m pretrain.generate --checkpoint work/demo/run/checkpoints --prompt "2019년 한해를 보내며,"
    python -m pretrain.generate --config configs/demo.yaml --prompt "..." --top-p 0.9 --temperature 0.8

Decoding is incremental: the prompt runs once, then one position per new token against the
key/value cache (`--no-cache` recomputes the whole sequence each step; the tokens are the same).
Generation stops at `</s>`, at `--max-length` new tokens, or at the model's context length.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Optional, Sequence

import numpy as np

from common.log import setup_logging
from pretrain.generate.inference import LoadedModel, load_model
from pretrain.generate.sampling import SamplingConfig, next_token

log = logging.getLogger("pretrain.generate")


def non_text_ids(tok: Any, allow_bytes: bool = False) -> np.ndarray:
    """Ids a continuation should never contain: <unk>, <s>, <pad>, <mask>, <unused*> (</s> stays: it ends),
    and unless `allow_bytes`, SentencePiece's byte-fallback pieces <0xNN>: sampled one at a time they
    rarely form valid UTF-8 and print as U+FFFD; text stays within the learned pieces."""
    ids = [tok.unk_id, tok.bos_id, tok.pad_id, tok.mask_id] + [tok.piece_id(p) for p in tok.unused_tokens]
    if not allow_bytes:
        ids += [i for i in range(tok.vocab_size) if tok.sp.is_byte(i)]
    return np.array(sorted({i for i in ids if i is not None and i != tok.eos_id}), dtype=np.int64)


def generate_ids(lm: LoadedModel, prompt_ids: Sequence[int], max_new_tokens: int, sampling: SamplingConfig,
                 seed: int = 0, use_cache: bool = True, stop_at_eos: bool = True,
                 allow_bytes: bool = False) -> list[int]:
    """Continue `prompt_ids` (which should start with <s>) by up to `max_new_tokens` ids; returns the new ids."""
    sampling.validate()
    if not prompt_ids:
        raise ValueError("empty prompt: pass at least the <s> id")
    rng = np.random.default_rng(seed)
    ids = list(prompt_ids)
    limit = lm.model_cfg.max_length
    if len(ids) >= limit:
        raise ValueError(f"prompt of {len(ids)} tokens fills the model's context of {limit} positions")
    new: list[int] = []
    banned = non_text_ids(lm.tokenizer, allow_bytes)
    logits, past = lm.step(np.array([ids]))
    for _ in range(max_new_tokens):
        nxt = next_token(logits[0, -1], np.array(ids, dtype=np.int64), sampling, rng, banned)
        ids.append(nxt)
        new.append(nxt)
        if (stop_at_eos and nxt == lm.tokenizer.eos_id) or len(ids) >= limit:
            break
        if use_cache:
            logits, past = lm.step(np.array([[nxt]]), past)
        else:
            logits, _ = lm.step(np.array([ids]))
    return new


def generate_text(lm: LoadedModel, prompt: str, max_new_tokens: int = 64,
                  sampling: Optional[SamplingConfig] = None, seed: int = 0, use_cache: bool = True,
                  allow_bytes: bool = False) -> str:
    """Prompt text -> prompt followed by the generated continuation (decoded, `</s>` dropped)."""
    tok = lm.tokenizer
    prompt_ids = [tok.bos_id] + tok.encode(prompt)
    new = generate_ids(lm, prompt_ids, max_new_tokens, sampling or SamplingConfig(), seed, use_cache,
                       allow_bytes=allow_bytes)
    if new and new[-1] == tok.eos_id:
        new = new[:-1]
    return tok.decode(prompt_ids[1:] + new)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a step directory or a checkpoint root (local or s3://); "
                   "default: checkpoint.root of --config")
    p.add_argument("--config", help="run config: supplies checkpoint.root and the S3 settings")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--prompt", required=True)
    p.add_argument("--engine", choices=["torch", "mxnet"], default="torch",
                   help="engine to decode with (any checkpoint works in either)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--max-length", type=int, default=64, help="new tokens at most")
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    p.add_argument("--allow-byte-tokens", action="store_true",
                   help="let the model emit byte-fallback pieces <0xNN> (may print U+FFFD)")
    args = p.parse_args(argv)
    setup_logging()

    s3cfg = None
    checkpoint = args.checkpoint
    if args.config:
        from common.config import load_config
        cfg = load_config(args.config, args.overrides)
        s3cfg = cfg.checkpoint.s3
        checkpoint = checkpoint or cfg.checkpoint.root
    if not checkpoint:
        p.error("give --checkpoint PATH or --config FILE")
    sampling = SamplingConfig(greedy=args.greedy, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    try:
        sampling.validate()
        lm = load_model(checkpoint, engine=args.engine, device=args.device, s3cfg=s3cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("model from %s (step %d, %s engine)", lm.checkpoint, lm.step_count, lm.engine)
    for i in range(args.num_samples):
        text = generate_text(lm, args.prompt, args.max_length, sampling, seed=args.seed + i,
                             use_cache=not args.no_cache, allow_bytes=args.allow_byte_tokens)
        print(f"[{i + 1}] {text}" if args.num_samples > 1 else text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
