"""SentencePiece BPE tokenizer: training, the `Tokenizer` wrapper, and `make tokenizer` (sampling: sentence_sample.py).

    python -m corpus tokenizer --config configs/base.yaml [--set tokenizer.vocab_size=32000] [--force]

Choices for Korean (the defaults in `TokenizerConfig`), and why:
* normalization `identity`: the corpus stage already wrote NFC text. SentencePiece's `nmt_nfkc`
  would rewrite compatibility characters, and for Korean that is harmful: NFKC maps the Hangul
  compatibility jamo of "ㅋㅋ"/"ㅠㅠ" (U+3131..) to conjoining jamo (U+1100..), which render and
  decode differently, and folds full-width forms. With identity and `remove_extra_whitespaces=false`
  decode(encode(text)) == text for every NFC string: spaces, newlines and tabs included (a GPT-2
  must be able to write what it reads).
* `byte_fallback=true`: characters outside the vocabulary (rare Hanja, emoji, other scripts,
  control characters such as `\\t`) become UTF-8 byte pieces `<0x..>` instead of `<unk>`, so the unk
  rate is ~0 and nothing is lost; it costs 256 vocabulary slots.
* newline is a piece of its own (`NEWLINE`, a user-defined symbol): clean documents separate their
  paragraphs with `\\n`, and the tokenizer trains on single sentences, which never hold one, so
  without it every newline would be the byte piece `<0x0A>`, which KoGPT2-style loops print literally.
* `character_coverage=0.9999`: characters covering 99.99% of the sampled text get pieces, the long
  tail (rare syllables, Hanja, emoji) goes through byte fallback, which KoGPT2-style loops print as
  `<0xNN>` names. Measured on ko_dev_corpus.txt (95% of lines trained, the other 5% held out, 2-core
  VM): at 50,000 pieces, 0.9995 keeps 3,136 characters and leaves 0.46% of held-out tokens byte
  pieces (1.5% of lines hold one); 0.9999 keeps 3,904, 0.13% (0.4% of lines), at the same tokens per
  character (0.4744 vs 0.4747). At the demo's 4,000 pieces 0.9999 costs 7% more tokens per character
  (0.78 vs 0.73; byte pieces 0.30% -> 0.08%). 1.0 would spend vocabulary on every character seen once,
  which in 20 GB of web text includes much noise.
* Ids as KoGPT2: `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3 (SentencePiece control ids), then
  `<mask>`=4, `<unused0..N-1>`=5.. and `\\n`=5+N as user-defined symbols (matched verbatim in text, so
  fine-tuning can use them as markers), so the ids never depend on the corpus.

Reproducibility: lines are selected by a seeded hash and their sentences sampled with a seeded
reservoir (Algorithm L) fed part after part in manifest order (corpus/sentence_sample.py), written to a file and trained with `shuffle_input_sentence=false`; the fields of the
model's trainer_spec that describe the machine rather than the model (input path, output prefix,
thread count) are cleared, so the same corpus and config give a byte-identical `spm.model` whatever
the thread count (BPE merges do not depend on it; tests/test_tokenizer.py checks both).
Memory: the reservoir holds at most `sample_sentences` UTF-8 sentences of at most
`max_sentence_chars` each (~125 bytes of UTF-8 per sentence on the scale corpus plus ~33 bytes of
Python object each: ~0.3 GB at the default 2 M); it is freed before SentencePiece (in a child
process) loads the same sentences, which needs ~17-25x the sample file's bytes (2.1 GB at 1 M
sentences; ~3.3 GB projected at 2 M, bench/scale.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import sentencepiece as spm

from common.io import atomic_open, read_json, sha256_file, write_bytes_atomic, write_json_atomic
from common.progress import Progress
from corpus.errors import TokenizerError  # noqa: F401 - re-exported: callers catch corpus.tokenizer.TokenizerError
from corpus.pii import PLACEHOLDERS
from corpus.sentence_sample import sample_sentences

log = logging.getLogger("corpus.tokenizer")

FORMAT = "kogpt-tokenizer-v1"
SPECIAL_TOKENS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>", "mask": "<mask>"}
NEWLINE = "\n"  # its own piece (a user-defined symbol after the <unused*> slots): see the module docstring
# The corpus stage's PII placeholders (<|rrn|>, <|tel|>, ...: corpus/pii.py), one piece each, after NEWLINE
# (so no earlier id moves): without them each would be learned as 3-5 pieces of punctuation and letters.
PII_PIECES = list(PLACEHOLDERS.values())
_UNUSED_RE = re.compile(r"^<unused\d+>$")
# seconds = a * MB^b * (vocab/50k)^c; `serial` = share that does not shrink with threads. a, b: 50k BPE
# on 31 and 120 MB samples of the scale corpus (bench/scale.py: 708 and 1,879 CPU s, one core busy); c: a guess
SPM_FIT = {"a": 58.0, "b": 0.73, "c": 1.0, "serial": 1.0}


# ----------------------------------------------------------------------------------------------------
# The tokenizer object every later stage uses


class Tokenizer:
    """A SentencePiece model plus its special ids; load with `Tokenizer.load(path)`.

    Ids are ints in [0, vocab_size); `encode` returns a plain list (no bos/eos added).
    """

    def __init__(self, model_path: str | os.PathLike, meta: Optional[dict] = None) -> None:
        self.model_path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        self.sha256 = sha256_file(self.model_path)
        self.vocab_size: int = self.sp.get_piece_size()
        self.unk_id = self._special(self.sp.unk_id(), SPECIAL_TOKENS["unk"])
        self.bos_id = self._special(self.sp.bos_id(), SPECIAL_TOKENS["bos"])
        self.eos_id = self._special(self.sp.eos_id(), SPECIAL_TOKENS["eos"])
        self.pad_id = self._special(self.sp.pad_id(), SPECIAL_TOKENS["pad"])
        self.mask_id = self.piece_id(SPECIAL_TOKENS["mask"])
        self.unused_tokens = [p for p in map(self.sp.id_to_piece, range(self.vocab_size)) if _UNUSED_RE.match(p)]
        self.meta = meta if meta is not None else self._describe(training=None)
        if meta is not None:
            want = meta.get("special_ids", {})
            have = {self.sp.id_to_piece(i): i for i in self.special_ids.values()}
            if any(have.get(piece) != i for piece, i in want.items()):
                raise TokenizerError(f"{self.model_path}: special ids {have} differ from tokenizer.json's {want}; "
                                     "the two files belong to different tokenizers: retrain (make tokenizer)")

    # -- loading and saving

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """`path`: a tokenizer directory, its `tokenizer.json`, or a bare `.model`/`.spiece` file."""
        path = Path(path)
        if path.is_dir():
            if (path / "tokenizer.json").is_file():
                path = path / "tokenizer.json"
            elif (path / "spm.model").is_file():
                path = path / "spm.model"
            else:
                raise TokenizerError(f"{path} holds no tokenizer.json or spm.model: run `make tokenizer`, or set "
                                     "tokenizer.model to an existing SentencePiece file (e.g. KoGPT2's .spiece)")
        if not path.is_file():
            raise TokenizerError(f"tokenizer not found: {path} (run `make tokenizer`, or fix tokenizer.dir/model)")
        if path.suffix != ".json":
            try:
                return cls(path)
            except (RuntimeError, OSError) as e:
                raise TokenizerError(f"{path} is not a SentencePiece model ({e})") from None
        meta = read_json(path)
        if meta.get("format") != FORMAT:
            raise TokenizerError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        model = path.parent / meta["model_file"]
        if not model.is_file():
            raise TokenizerError(f"{path} names {model}, which is missing: copy it back or retrain")
        actual = sha256_file(model)
        if actual != meta["model_sha256"]:
            raise TokenizerError(f"{model} has sha256 {actual[:12]}.., but {path} records "
                                 f"{meta['model_sha256'][:12]}..: the files were mixed up; retrain (make tokenizer)")
        return cls(model, meta)

    def save(self, directory: str | os.PathLike) -> Path:
        """Copy the model into `directory` as spm.model (+ spm.vocab) and write tokenizer.json last."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        dst = d / "spm.model"
        if dst.resolve() != self.model_path.resolve():
            with atomic_open(dst, "wb") as f, open(self.model_path, "rb") as src:
                shutil.copyfileobj(src, f)
        vocab_src = self.model_path.with_suffix(".vocab")
        if (d / "spm.vocab").resolve() != vocab_src.resolve():
            if vocab_src.is_file():
                write_bytes_atomic(d / "spm.vocab", vocab_src.read_bytes())
            else:  # a bare .spiece has none: write SentencePiece's own layout, piece<TAB>score
                lines = (f"{self.sp.id_to_piece(i)}\t{self.sp.get_score(i):g}\n" for i in range(self.vocab_size))
                write_bytes_atomic(d / "spm.vocab", "".join(lines).encode("utf-8"))
        meta = dict(self.meta, model_file="spm.model", model_sha256=self.sha256)
        write_json_atomic(d / "tokenizer.json", meta)
        return d / "tokenizer.json"

    # -- ids

    def _special(self, sp_id: int, piece: str) -> Optional[int]:
        return sp_id if sp_id >= 0 else self.piece_id(piece)

    def piece_id(self, piece: str) -> Optional[int]:
        """The id of `piece`, or None when the model has no such piece."""
        i = self.sp.piece_to_id(piece)
        return i if self.sp.id_to_piece(i) == piece else None

    @property
    def special_ids(self) -> dict[str, int]:
        ids = {"unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id,
               "mask": self.mask_id}
        return {k: v for k, v in ids.items() if v is not None}

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Encode many texts; SentencePiece spreads them over `num_threads` C++ threads."""
        return self.sp.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids (list or numpy array) back to text; control ids (<s>, </s>, <pad>) decode to ''."""
        return self.sp.decode(ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids])

    # -- gluonnlp (KoGPT2's own stack)

    def gluonnlp_vocab(self):
        """A gluonnlp `BERTVocab` over this model, ids identical to SentencePiece's, knowing bos/eos/unk/pad
        (and mask when present): `vocab[vocab.bos_token]`, `vocab[tokens]`, `vocab.to_tokens(ids)`."""
        import gluonnlp as nlp

        piece = self.sp.id_to_piece
        return nlp.vocab.BERTVocab.from_sentencepiece(
            str(self.model_path),
            unknown_token=piece(self.unk_id),
            padding_token=piece(self.pad_id) if self.pad_id is not None else None,
            bos_token=piece(self.bos_id) if self.bos_id is not None else None,
            eos_token=piece(self.eos_id) if self.eos_id is not None else None,
            mask_token=piece(self.mask_id) if self.mask_id is not None else None,
            sep_token=None, cls_token=None)

    def gluonnlp_tokenizer(self):
        """gluonnlp's `SentencepieceTokenizer` over this model (text -> pieces), as KoGPT2 uses it.

        gluonnlp 0.10 calls `SampleEncodeAsPieces(text, num_best, alpha)` even for num_best=0, which
        sentencepiece >= 0.1.9x rejects ("When enable_sampling is True ..."); with num_best 0 or 1 no
        sampling is wanted, so the returned subclass encodes directly, as old sentencepiece did.
        """
        return _gluonnlp_tokenizer_class()(str(self.model_path), num_best=0, alpha=0)

    def _describe(self, training: Optional[dict]) -> dict:
        specials = {k: self.sp.id_to_piece(v) for k, v in self.special_ids.items()}
        return {"format": FORMAT, "type": "sentencepiece", "vocab_size": self.vocab_size,
                "model_file": self.model_path.name, "model_sha256": self.sha256,
                "special_tokens": specials,
                "special_ids": {self.sp.id_to_piece(v): v for v in self.special_ids.values()},
                "unused_tokens": self.unused_tokens, "training": training}


def _gluonnlp_tokenizer_class():
    import gluonnlp as nlp

    class SentencepieceTokenizer(nlp.data.SentencepieceTokenizer):
        def __call__(self, sample: str) -> list[str]:
            if self._nbest in (0, 1):
                return self._processor.EncodeAsPieces(sample)
            return super().__call__(sample)

    return SentencepieceTokenizer


# ----------------------------------------------------------------------------------------------------
# Training


def spm_training_args(t: Any, input_file: str, model_prefix: str, threads: int) -> dict:
    """SentencePiece trainer arguments for a TokenizerConfig (also used to run `spm_train` in bench/)."""
    return dict(
        input=input_file, model_prefix=model_prefix, model_type="bpe", vocab_size=t.vocab_size,
        character_coverage=t.character_coverage, byte_fallback=t.byte_fallback,
        normalization_rule_name=t.normalization, remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        unk_piece=SPECIAL_TOKENS["unk"], bos_piece=SPECIAL_TOKENS["bos"], eos_piece=SPECIAL_TOKENS["eos"],
        pad_piece=SPECIAL_TOKENS["pad"],
        user_defined_symbols=[SPECIAL_TOKENS["mask"]] + [f"<unused{i}>" for i in range(t.num_unused)] + [NEWLINE]
        + PII_PIECES,
        input_sentence_size=0, shuffle_input_sentence=False,  # the sample is already drawn, seeded
        max_sentence_length=4 * t.max_sentence_chars,         # bytes; UTF-8 is at most 4 per char
        hard_vocab_limit=True, num_threads=threads, minloglevel=2)


def canonical_model(data: bytes) -> bytes:
    """Clear the trainer_spec fields that describe the run, not the model (input path, prefix, threads)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(data)
    for name in ("input", "model_prefix", "num_threads"):
        m.trainer_spec.ClearField(name)
    return m.SerializeToString(deterministic=True)


def spm_seconds_estimate(sample_bytes: int, vocab_size: int, threads: int) -> float:
    """Rough SentencePiece BPE training time (s) for a sample file, for the progress line's ETA: the fit
    of bench/scale.py's measurements (2-core x86_64 VM, README "Scale"); threads barely matter."""
    mb = sample_bytes / 1e6
    return SPM_FIT["a"] * mb ** SPM_FIT["b"] * (vocab_size / 50_000) ** SPM_FIT["c"] * \
        (SPM_FIT["serial"] + (1 - SPM_FIT["serial"]) * 2 / max(threads, 1))


def train_spm_logged(sample_file: Path, t: Any, out: Path, threads: int, sentences: int) -> None:
    """`train_spm_file` in a forked process while this one logs progress (elapsed, estimated ETA).

    SentencePiece's trainer holds the GIL for its whole run (tens of minutes at scale), so a logging
    thread beside it would stay silent; the child writes the same files, so the model is the same.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    est = spm_seconds_estimate(sample_file.stat().st_size, t.vocab_size, threads)
    with Progress(f"training {t.vocab_size}-piece BPE on {sentences:,} sentences", logger=log, estimate_s=est) as bar, \
            ProcessPoolExecutor(1, mp_context=ctx) as ex:
        fut = ex.submit(train_spm_file, sample_file, t, out, threads)
        while True:
            try:
                fut.result(timeout=1.0)
                return
            except FutureTimeout:
                bar.update(0)


def train_spm_file(sentences_file: str | os.PathLike, t: Any, out_dir: str | os.PathLike, threads: int) -> Path:
    """Train BPE on a one-sentence-a-line file; write `out_dir`/spm.model (canonical) and spm.vocab."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reserved = 2 + len(SPECIAL_TOKENS) + t.num_unused + (256 if t.byte_fallback else 0)  # +1: NEWLINE
    reserved += len(PII_PIECES)
    if t.vocab_size <= reserved:
        raise TokenizerError(f"tokenizer.vocab_size={t.vocab_size} leaves no room for learned pieces: "
                             f"{reserved} ids are reserved (specials, {t.num_unused} unused slots"
                             f"{', 256 byte pieces' if t.byte_fallback else ''}); raise it or lower tokenizer.num_unused")
    with tempfile.TemporaryDirectory(prefix=".train-", dir=out) as tmp:
        prefix = os.path.join(tmp, "spm")
        try:
            spm.SentencePieceTrainer.train(**spm_training_args(t, str(sentences_file), prefix, threads))
        except RuntimeError as e:
            msg = str(e)
            m = re.search(r"Please set it to a value <= (\d+)", msg)
            if m:
                raise TokenizerError(
                    f"tokenizer.vocab_size={t.vocab_size} cannot be reached: the sampled sentences support at most "
                    f"{m.group(1)} pieces. Lower it (--set tokenizer.vocab_size={m.group(1)}) or give the corpus "
                    "more text") from None
            if "required_chars" in msg or "character_coverage" in msg:
                raise TokenizerError(f"tokenizer.vocab_size={t.vocab_size} is smaller than the characters to cover "
                                     f"({msg.strip()}); raise it or lower tokenizer.character_coverage") from None
            raise
        write_bytes_atomic(out / "spm.model", canonical_model(Path(prefix + ".model").read_bytes()))
        write_bytes_atomic(out / "spm.vocab", Path(prefix + ".vocab").read_bytes())
    return out / "spm.model"


def tokenizer_report(tok: Tokenizer, texts: Sequence[str], threads: int = 1) -> dict:
    """Vocab size, unk rate, byte-fallback rate and tokens per character/word on `texts`.

    Characters count every code point except whitespace; words are whitespace-separated (eojeol).
    """
    ids = tok.encode_batch(texts, num_threads=threads) if texts else []
    n_tok = sum(map(len, ids))
    chars = sum(len(t) - sum(c.isspace() for c in t) for t in texts)
    words = sum(len(t.split()) for t in texts)
    byte_ids = {i for i in range(tok.vocab_size) if tok.sp.is_byte(i)}
    unk = sum(x == tok.unk_id for row in ids for x in row)
    byte = sum(x in byte_ids for row in ids for x in row)
    return {"vocab_size": tok.vocab_size, "docs": len(texts), "chars": chars, "words": words, "tokens": n_tok,
            "unk_rate": unk / max(n_tok, 1), "byte_fallback_rate": byte / max(n_tok, 1),
            "tokens_per_char": n_tok / max(chars, 1), "tokens_per_word": n_tok / max(words, 1)}


def _training_settings(cfg: Any, manifest_sha: str) -> dict:
    t = cfg.tokenizer
    return {"model_type": "bpe", "vocab_size": t.vocab_size, "sample_sentences": t.sample_sentences,
            "max_sentence_chars": t.max_sentence_chars, "character_coverage": t.character_coverage,
            "byte_fallback": t.byte_fallback, "normalization": t.normalization,
            "remove_extra_whitespaces": False, "num_unused": t.num_unused, "newline_piece": True, "seed": t.seed,
            "pii_pieces": PII_PIECES,
            "sentence_splitter": cfg.corpus.sentence_splitter, "heldout": {
                "valid_fraction": cfg.shards.valid_fraction, "seed": cfg.shards.seed},
            "corpus_manifest_sha256": manifest_sha, "sentencepiece_version": spm.__version__}


def train_tokenizer(cfg: Any, force: bool = False) -> Tokenizer:
    """`make tokenizer`: sample sentences from `corpus.out_dir`, train, write `tokenizer.dir`, report.

    Skips (and returns the existing tokenizer) when `tokenizer.dir` was trained with the same settings
    on the same clean corpus, unless `force`.
    """
    from common.schema import cpu_count

    t = cfg.tokenizer
    out, clean = Path(t.dir), Path(cfg.corpus.out_dir)
    if not (clean / "manifest.json").is_file():
        raise TokenizerError(f"{clean}/manifest.json is missing: run `make corpus` first (corpus.out_dir)")
    manifest_sha = sha256_file(clean / "manifest.json")
    settings = _training_settings(cfg, manifest_sha)
    if not force and (out / "tokenizer.json").is_file():
        old = read_json(out / "tokenizer.json")
        if old.get("training", {}) and {k: v for k, v in old["training"].items() if k in settings} == settings:
            log.info("%s is up to date (same corpus and settings): not retraining; --force to redo", out)
            return Tokenizer.load(out)
    threads = t.threads or cpu_count()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sample-", dir=out) as tmp:
        t0 = time.time()
        sample_file = Path(tmp) / "sentences.txt"
        stats = sample_sentences(cfg, sample_file, workers=threads)
        heldout = stats.pop("heldout")
        t1 = time.time()
        log.info("sampled %d of %d sentences (%d too long) from %d documents in %.1f s; %d documents held out",
                 stats["sentences_sampled"], stats["sentences_seen"], stats["sentences_too_long"],
                 stats["docs"], t1 - t0, stats["heldout_docs"])
        train_spm_logged(sample_file, t, out, threads, stats["sentences_sampled"])
        t2 = time.time()
    log.info("trained %d-piece BPE on %d threads in %.1f s", t.vocab_size, threads, t2 - t1)
    tok = Tokenizer(out / "spm.model")
    tok.meta = tok._describe(training=dict(settings, stats=stats, threads=threads,
                                           seconds={"sample": round(t1 - t0, 3), "train": round(t2 - t1, 3)}))
    tok.save(out)  # tokenizer.json last: its presence means the directory is complete
    report = tokenizer_report(tok, heldout, threads)
    report["heldout"] = bool(cfg.shards.valid_fraction)
    write_json_atomic(out / "report.json", report)
    return tok


def format_report(report: dict) -> str:
    rows = [("vocab size", f"{report['vocab_size']:,}"), ("held-out docs", f"{report['docs']:,}"),
            ("tokens", f"{report['tokens']:,}"), ("unk rate", f"{report['unk_rate']:.6f}"),
            ("byte-fallback rate", f"{report['byte_fallback_rate']:.6f}"),
            ("tokens / char (non-space)", f"{report['tokens_per_char']:.4f}"),
            ("tokens / word (eojeol)", f"{report['tokens_per_word']:.4f}")]
    return "\n".join(f"{k:<28}{v:>14}" for k, v in rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: `python -m corpus tokenizer --config FILE [--set k=v] [--force]`."""
    from common.config import ConfigError, add_config_args, config_from_args, save_resolved
    from common.log import setup_logging

    p = argparse.ArgumentParser(prog="python -m corpus tokenizer", description=__doc__.split("\n")[0])
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="retrain even if tokenizer.dir is up to date")
    args = p.parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    try:
        if cfg.tokenizer.model:
            tok = Tokenizer.load(cfg.tokenizer.model)
            tok.save(cfg.tokenizer.dir)
            log.info("tokenizer.model=%s is set: not training; copied it (sha256 %s..) to %s",
                     cfg.tokenizer.model, tok.sha256[:12], cfg.tokenizer.dir)
            report = None
        else:
            tok = train_tokenizer(cfg, force=args.force)
            report = read_json(Path(cfg.tokenizer.dir) / "report.json")
    except TokenizerError as e:
        log.error("%s", e)
        return 2
    save_resolved(cfg, Path(cfg.tokenizer.dir) / "config.yaml")
    print(f"tokenizer: {cfg.tokenizer.dir} (sha256 {tok.sha256}, ids {json.dumps(tok.special_ids)})")
    if report:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
