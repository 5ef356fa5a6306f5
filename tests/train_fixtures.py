"""Small real fixtures for the training tests: a SentencePiece tokenizer and token shards written
exactly as docs/CONTRACTS.md describes, from a seeded synthetic Korean corpus (no network, ~1 s)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from common.io import sha256_file

_SUBJ = ["나는", "우리는", "그는", "친구가", "선생님이", "아이들이", "고양이가", "사람들이"]
_OBJ = ["밥을", "책을", "영화를", "음악을", "사과를", "편지를", "그림을", "노래를"]
_VERB = ["먹었다", "읽었다", "보았다", "들었다", "샀다", "썼다", "그렸다", "불렀다"]
_ADV = ["오늘", "어제", "천천히", "함께", "다시", "조용히", "아침에", "주말에"]


def synthetic_docs(n_docs: int, seed: int = 0) -> list[str]:
    """Documents of 2-6 simple Korean sentences (a tiny grammar, so a model can learn it)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sents = [f"{rng.choice(_ADV)} {rng.choice(_SUBJ)} {rng.choice(_OBJ)} {rng.choice(_VERB)}."
                 for _ in range(rng.randint(2, 6))]
        docs.append(" ".join(sents))
    return docs


def make_tokenizer(out_dir: Path, docs: list[str], vocab_size: int = 400):
    """Train a BPE SentencePiece model with the project's settings; returns corpus.tokenizer.Tokenizer."""
    from common.schema import TokenizerConfig
    from corpus.tokenizer import Tokenizer, train_spm_file

    out_dir.mkdir(parents=True, exist_ok=True)
    sentences = out_dir.parent / "sentences.txt"
    sentences.write_text("\n".join(docs) + "\n", encoding="utf-8")
    t = TokenizerConfig(dir=str(out_dir), vocab_size=vocab_size, num_unused=4, threads=1)
    model = train_spm_file(sentences, t, out_dir, threads=1)
    tok = Tokenizer(model)
    tok.save(out_dir)
    return Tokenizer.load(out_dir)


def write_shards(out_dir: Path, tok, splits: dict[str, list[list[str]]]) -> Path:
    """splits: {"train": [docs of file 0, docs of file 1, ...], "valid": [...]} -> shards dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "kogpt-shards-v2", "dtype": "uint16", "vocab_size": tok.vocab_size,
                "bos_id": tok.bos_id, "eos_id": tok.eos_id, "tokenizer_sha256": tok.sha256, "splits": {},
                "config": {}}
    for split, files in splits.items():
        entries, total_tok, total_docs = [], 0, 0
        for k, docs in enumerate(files):
            ids, offsets = [], [0]
            for d in docs:
                ids.extend([tok.bos_id] + tok.encode(d) + [tok.eos_id])
                offsets.append(len(ids))
            stem = f"{split}_{k:05d}"
            np.asarray(ids, dtype="<u2").tofile(out_dir / f"{stem}.bin")
            np.asarray(offsets, dtype="<i8").tofile(out_dir / f"{stem}.idx")
            entries.append({"bin": f"{stem}.bin", "idx": f"{stem}.idx", "tokens": len(ids), "docs": len(docs),
                            "sha256": sha256_file(out_dir / f"{stem}.bin")})
            total_tok += len(ids)
            total_docs += len(docs)
        manifest["splits"][split] = {"tokens": total_tok, "docs": total_docs, "files": entries}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out_dir


def make_run_inputs(root: Path, n_docs: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """Tokenizer dir and shards dir (two train files, one valid file) under `root`."""
    docs = synthetic_docs(n_docs, seed)
    tok = make_tokenizer(root / "tokenizer", docs)
    n_valid = max(1, n_docs // 10)
    train = docs[n_valid:]
    half = len(train) // 2
    shards = write_shards(root / "shards", tok, {"train": [train[:half], train[half:]], "valid": [docs[:n_valid]]})
    return root / "tokenizer", shards
