"""Token shards: clean documents -> flat uint16 token files with a document index (`make shards`).

Modules: `read` (TokenShards, the memory-mapped reader the trainer uses), `encode` (workers that encode
clean parts), `write` (the .bin/.idx writer and merging), `build` (the stage: build_shards), `cli`
(`python -m corpus.shards`, inspect).

    python -m corpus shards --config configs/base.yaml [--workers N]   (= python -m corpus.shards build ...)
    python -m corpus.shards inspect work/shards [--docs 3]
    python -m corpus.shards merge OUT_DIR IN_DIR [IN_DIR ...] [--shard-tokens N]

Format (docs/CONTRACTS.md "Token shards"): `<split>_NNNNN.bin` holds little-endian uint16 ids, every
document `<s> ids </s>` (format v2); `<split>_NNNNN.idx` holds little-endian int64 token offsets, n_docs + 1
of them, offsets[0] = 0; `manifest.json` is written last. Like llm.c's shards / Megatron's indexed
dataset, without a header, so `np.memmap(path, dtype="<u2")` is the whole reader.

How it is built, and why it is deterministic: every clean part is encoded by one worker process into
`.parts/part-NNNNN.{train,valid}.{bin,idx}` (temporary names, then rename; a `.done.json` marker last,
so a rerun skips finished parts); then the parts are concatenated in part order into shards of at
most `shards.shard_tokens` tokens, cut at document boundaries. A document's split comes from a seeded
hash of its id, so the bytes do not depend on `--workers` or on the order workers finish. When there
are fewer parts than workers, each process encodes with several SentencePiece threads instead.
"""
from __future__ import annotations

from corpus.docs import doc_key, is_valid_doc
from corpus.shards.build import build_shards
from corpus.shards.cli import inspect, main
from corpus.shards.encode import WordCacheEncoder, iter_part
from corpus.shards.read import DTYPE, FORMAT, IDX_DTYPE, SPLITS, ShardsError, TokenShards, check_tokenizer
from corpus.shards.write import merge_files, merge_shard_dirs

__all__ = ["DTYPE", "FORMAT", "IDX_DTYPE", "SPLITS", "ShardsError", "TokenShards", "WordCacheEncoder", "build_shards",
           "check_tokenizer", "doc_key", "inspect", "is_valid_doc", "iter_part", "main", "merge_files",
           "merge_shard_dirs"]
