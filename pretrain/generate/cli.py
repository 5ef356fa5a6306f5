"""Generate Korean text from a checkpoint, with either engine.

    python -m pretrain.generate --checkpoint work/demo/run/checkpoints --prompt "2019년 한해를 보내며,"
    python -m pretrain.generate --config configs/demo.yaml --prompt "..." --top-p 0.9 --temperature 0.8

Decoding is incremental: the prompt runs once, then one position per new token against the
key/value cache (`--no-cache` recomputes the whole sequence each step; the tokens are the same).
Generation stops at `</s>`, at `--max-length` new tokens, or at the model's context length.

The input is `[<s>] + encode(prompt)`, as every training document starts (docs/CONTRACTS.md). The
continuation never contains <unk>, <s>, <pad>, <mask> or <unused*> (`non_text_ids`); every text piece,
byte-fallback pieces `<0xNN>` included, may be chosen, and the ids are decoded together, so a
character spelled as 2-4 byte pieces prints as that character (`--ban-byte-tokens` keeps to the learned
pieces instead). The exported HF model's generation_config.json suppresses the same ids, so its
pipeline's greedy tokens are these. `--json` prints one line per sample: {"text", "ids", "prompt_ids"}.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Optional, Sequence

import numpy as np

from common.log import setup_logging
from pretrain.generate.inference import LoadedModel, load_model
from pretrain.generate.sampling import SamplingConfig, next_token

log = logging.getLogger("pretrain.generate")


def non_text_ids(tok: Any, ban_bytes: bool = False) -> np.ndarray:
    """Ids a continuation never contains: <unk>, <s>, <pad>, <mask>, <unused*> (</s> stays: it ends; the
    shards hold none of them inside a document). With `ban_bytes` also SentencePiece's byte-fallback
    pieces <0xNN> (valid text: a character outside the vocabulary; banned, text keeps to learned pieces)."""
    ids = [tok.unk_id, tok.bos_id, tok.pad_id, tok.mask_id] + [tok.piece_id(p) for p in tok.unused_tokens]
    if ban_bytes:
        ids += [i for i in range(tok.vocab_size) if tok.sp.is_byte(i)]
    return np.array(sorted({i for i in ids if i is not None and i != tok.eos_id}), dtype=np.int64)


def generate_ids(lm: LoadedModel, prompt_ids: Sequence[int], max_new_tokens: int, sampling: SamplingConfig,
                 seed: int = 0, use_cache: bool = True, stop_at_eos: bool = True,
                 ban_bytes: bool = False) -> list[int]:
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
    banned = non_text_ids(lm.tokenizer, ban_bytes)
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
                  ban_bytes: bool = False) -> str:
    """Prompt text -> prompt followed by the generated continuation (decoded, `</s>` dropped)."""
    return generate_sample(lm, prompt, max_new_tokens, sampling, seed, use_cache, ban_bytes)["text"]


def generate_sample(lm: LoadedModel, prompt: str, max_new_tokens: int = 64,
                    sampling: Optional[SamplingConfig] = None, seed: int = 0, use_cache: bool = True,
                    ban_bytes: bool = False) -> dict:
    """{"text": prompt + continuation (decoded together, `</s>` dropped), "ids": the new ids (ending with
    `</s>` when it stopped there), "prompt_ids": `[<s>] + encode(prompt)`}."""
    tok = lm.tokenizer
    prompt_ids = [tok.bos_id] + tok.encode(prompt)
    new = generate_ids(lm, prompt_ids, max_new_tokens, sampling or SamplingConfig(), seed, use_cache,
                       ban_bytes=ban_bytes)
    text_ids = new[:-1] if new and new[-1] == tok.eos_id else new
    return {"text": tok.decode(prompt_ids[1:] + text_ids), "ids": new, "prompt_ids": prompt_ids}


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
    p.add_argument("--ban-byte-tokens", action="store_true",
                   help="never emit byte-fallback pieces <0xNN> (characters outside the vocabulary)")
    p.add_argument("--allow-byte-tokens", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--json", action="store_true",
                   help='print one JSON line per sample: {"text", "ids" (new ids), "prompt_ids"}')
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
        out = generate_sample(lm, args.prompt, args.max_length, sampling, seed=args.seed + i,
                              use_cache=not args.no_cache, ban_bytes=args.ban_byte_tokens)
        if args.json:
            print(json.dumps(out, ensure_ascii=False), flush=True)
        else:
            print(f"[{i + 1}] {out['text']}" if args.num_samples > 1 else out["text"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
