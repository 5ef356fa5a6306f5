"""Token shards: clean documents -> flat uint16 token files with a document index (`make shards`).

    python -m corpus shards --config configs/base.yaml [--workers N]   (= python -m corpus.shards build ...)
    python -m corpus.shards inspect work/shards [--docs 3]
    python -m corpus.shards merge OUT_DIR IN_DIR [IN_DIR ...] [--shard-tokens N]

Format (docs/CONTRACTS.md "Token shards"): `<split>_NNNNN.bin` holds little-endian uint16 ids, every
document followed by `</s>`; `<split>_NNNNN.idx` holds little-endian int64 token offsets, n_docs + 1
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

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from common.io import atomic_open, read_json, sha256_file, write_json_atomic
from corpus.shard_reader import (  # noqa: F401 - the reader, re-exported
    DTYPE, FORMAT, IDX_DTYPE, SPLITS, ShardsError, TokenShards, _array, _load_manifest, check_tokenizer)
from corpus.tokenizer import Tokenizer

log = logging.getLogger("corpus.shards")

_MAX_ERRORS = 100  # error records kept in the manifest (all are counted)


def doc_key(doc: dict) -> str:
    """What a document's split is keyed on: its id, or (no id) a hash of its text."""
    key = doc.get("id")
    if key is None or key == "":
        return "sha1:" + hashlib.sha1(str(doc.get("text", "")).encode("utf-8")).hexdigest()
    return str(key)


def is_valid_doc(key: str, seed: int, fraction: float) -> bool:
    """True when the document goes to the validation split: blake2b(seed, key) as a fraction of 2^64."""
    if fraction <= 0.0:
        return False
    h = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") < fraction * 2.0 ** 64


# ----------------------------------------------------------------------------------------------------
# Writing: one output file pair, appended to in order


class _BinWriter:
    """Appends documents to `<stem>.bin`/`.idx` under temporary names; `close()` renames them into place."""

    def __init__(self, stem: Path) -> None:
        self.stem, self.tokens, self.docs = stem, 0, 0
        self._cm = atomic_open(stem.parent / (stem.name + ".bin"), "wb")
        self._f = self._cm.__enter__()
        self._sha = hashlib.sha256()
        self._offsets: list[np.ndarray] = [np.zeros(1, IDX_DTYPE)]

    def write(self, tokens: np.ndarray, rel_offsets: np.ndarray) -> None:
        """`tokens`: uint16 ids of whole documents; `rel_offsets`: their ends relative to tokens[0]."""
        step = 1 << 25  # 64 MiB of uint16 at a time
        for lo in range(0, len(tokens), step):
            buf = np.ascontiguousarray(tokens[lo:lo + step], dtype=DTYPE).tobytes()
            self._f.write(buf)
            self._sha.update(buf)
        self._offsets.append(np.asarray(rel_offsets, IDX_DTYPE) + self.tokens)
        self.tokens += len(tokens)
        self.docs += len(rel_offsets)

    def close(self) -> dict:
        self._cm.__exit__(None, None, None)
        with atomic_open(self.stem.parent / (self.stem.name + ".idx"), "wb") as f:
            f.write(np.concatenate(self._offsets).astype(IDX_DTYPE).tobytes())
        return {"bin": self.stem.name + ".bin", "idx": self.stem.name + ".idx", "tokens": self.tokens,
                "docs": self.docs, "sha256": self._sha.hexdigest()}

    def abort(self) -> None:
        self._cm.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary file


def merge_files(inputs: Sequence[tuple[Path, Path]], out_dir: Path, split: str, shard_tokens: int) -> list[dict]:
    """Concatenate (bin, idx) pairs in order into `<split>_NNNNN.bin/.idx` of <= shard_tokens tokens each.

    Files are cut at document boundaries; a document longer than shard_tokens gets a file of its own.
    """
    entries: list[dict] = []
    cur: Optional[_BinWriter] = None
    try:
        for b, i in inputs:
            toks, offs = _array(b, DTYPE), np.fromfile(i, dtype=IDX_DTYPE)
            d, n = 0, len(offs) - 1
            while d < n:
                if cur is None:
                    cur = _BinWriter(out_dir / f"{split}_{len(entries):05d}")
                room = shard_tokens - cur.tokens
                j = int(np.searchsorted(offs, offs[d] + room, side="right")) - 1
                if j <= d:
                    if cur.tokens:
                        entries.append(cur.close())
                        cur = None
                        continue
                    j = d + 1
                cur.write(toks[offs[d]:offs[j]], offs[d + 1:j + 1] - offs[d])
                d = j
        if cur is not None and cur.docs:
            entries.append(cur.close())
        elif cur is not None:
            cur.abort()
    except BaseException:
        if cur is not None:
            cur.abort()
        raise
    return entries


def _write_manifest(out_dir: Path, tok_info: dict, splits: dict[str, list[dict]], extra: dict) -> dict:
    m = {"format": FORMAT, "dtype": "uint16", "vocab_size": tok_info["vocab_size"], "eos_id": tok_info["eos_id"],
         "tokenizer_sha256": tok_info["sha256"],
         "splits": {s: {"tokens": sum(e["tokens"] for e in files), "docs": sum(e["docs"] for e in files),
                        "files": files} for s, files in splits.items()}}
    m.update(extra)
    write_json_atomic(out_dir / "manifest.json", m)
    return m


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for p in list(out_dir.glob("train_*.*")) + list(out_dir.glob("valid_*.*")):
        if p.suffix in (".bin", ".idx") and p.name not in keep:
            p.unlink()


def merge_shard_dirs(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                     shard_tokens: int = 500_000_000) -> dict:
    """Merge shard directories (same tokenizer only) into one, documents in input order; returns its manifest."""
    mans = [_load_manifest(p) for p in inputs]
    if not mans:
        raise ShardsError("merge: give at least one shards directory")
    sha = mans[0][0]["tokenizer_sha256"]
    for m, where in mans[1:]:
        if m.get("tokenizer_sha256") != sha:
            raise ShardsError(f"refusing to merge {where} (tokenizer sha256 {str(m.get('tokenizer_sha256'))[:12]}..) "
                              f"with {mans[0][1]} (tokenizer sha256 {sha[:12]}..): shards made by different "
                              "tokenizers cannot be mixed; re-encode one of them with the other's tokenizer")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").is_file():
        check_tokenizer(out, sha)
        (out / "manifest.json").unlink()
    splits = {s: merge_files([(w / e["bin"], w / e["idx"]) for m, w in mans for e in m["splits"][s]["files"]],
                             out, s, shard_tokens) for s in SPLITS}
    _remove_stale(out, {e[k] for files in splits.values() for e in files for k in ("bin", "idx")})
    first_dir = mans[0][1]
    if (first_dir / "tokenizer").is_dir() and first_dir.resolve() != out.resolve():
        Tokenizer.load(first_dir / "tokenizer").save(out / "tokenizer")
    info = {"vocab_size": mans[0][0]["vocab_size"], "eos_id": mans[0][0]["eos_id"], "sha256": sha}
    return _write_manifest(out, info, splits, {"merged_from": [str(w) for _, w in mans],
                                                "tokenizer": mans[0][0].get("tokenizer", {})})



# ----------------------------------------------------------------------------------------------------
# Building from clean documents (worker processes)


def iter_part(path: str | os.PathLike) -> Iterator[tuple[int, Optional[dict], Optional[str]]]:
    """Yield (line number, document, None) or (line number, None, error) for one zstd JSONL clean part.

    A line that is not JSON, not a dict or has no string `text` is an error, not fatal; a damaged zstd
    stream ends the part with one error.
    """
    import zstandard as zstd

    lineno = 0
    with open(path, "rb") as fh:
        reader = io.BufferedReader(zstd.ZstdDecompressor().stream_reader(fh, read_across_frames=True),
                                   buffer_size=1 << 20)
        while True:
            try:
                line = reader.readline()
            except zstd.ZstdError as e:
                yield lineno + 1, None, f"zstd stream damaged, rest of part skipped: {e}"
                return
            if not line:
                return
            lineno += 1
            try:
                doc = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                yield lineno, None, f"not JSON: {e}"
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                yield lineno, None, "not an object with a string 'text'"
                continue
            yield lineno, doc, None


class WordCacheEncoder:
    """Batch encoder that reuses the ids of frequent space-separated words, when that is exact.

    With SentencePiece BPE, identity normalization, `remove_extra_whitespaces=false`, whitespace
    splitting and a dummy prefix, no piece spans a space, so encode(text) is the concatenation of
    encode(word) over text.split(" ") (an empty word, i.e. an extra space, is the lone "▁" piece),
    and every word's ids start with a piece that starts with "▁". Output always equals `sp.encode`.

    Korean text repeats its eojeol heavily, but a small corpus still has many new words, and a word
    looked up costs ~0.9 us against ~5.8 us for a new word encoded alone (2.2 us per word in context;
    2-core VM, 50k vocab). So each batch takes the cheaper road: when at least `min_hit_rate` of its
    words are cached, only the new words go to SentencePiece; otherwise the texts are encoded in
    context and the ids of a sample of them, cut at the "▁" pieces, teach the cache. It keeps the first
    `max_words` words it sees (the frequent ones come early) and then stops growing. For other
    models (e.g. nmt_nfkc, which can turn other characters into spaces) it is plain batch encoding.
    """

    def __init__(self, tok: Tokenizer, max_words: int = 1_000_000, min_hit_rate: float = 0.75) -> None:
        self.sp, self.max_words, self.min_hit_rate = tok.sp, max_words, min_hit_rate
        self.space = tok.piece_id("\u2581")
        self.cache: Optional[dict[str, list[int]]] = {} if self.exact_for(tok) else None
        if self.cache is not None:
            self._word_start = np.array([self.sp.id_to_piece(i).startswith("\u2581")
                                         for i in range(self.sp.get_piece_size())], dtype=bool)
        self.words = self.hits = 0   # words sampled and found cached, over all batches (for the log)

    @staticmethod
    def exact_for(tok: Tokenizer) -> bool:
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(tok.model_path.read_bytes())
        n, t = m.normalizer_spec, m.trainer_spec
        return (t.model_type == pb.TrainerSpec.BPE and n.name == "identity" and not n.remove_extra_whitespaces
                and n.add_dummy_prefix and n.escape_whitespaces and t.split_by_whitespace
                and not t.treat_whitespace_as_suffix and not t.pretokenization_delimiter
                and tok.piece_id("\u2581") is not None
                and not any(("\u2581" in p.piece or " " in p.piece) and p.type == p.USER_DEFINED for p in m.pieces))

    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        """Ids of each text, exactly `sp.encode(texts)`; `threads` SentencePiece threads."""
        cache = self.cache
        if cache is None:
            return self.sp.encode(texts, num_threads=threads)
        # The hit rate is estimated on every 8th text, and only those teach the cache: frequent words
        # are in any sample, and a full pass over a batch that is mostly new words costs ~25%.
        sample = texts[::8]
        sample_words = [t.split(" ") if t else [] for t in sample]
        n = sum(map(len, sample_words))
        hits = sum(1 for ws in sample_words for w in ws if w in cache)
        self.words, self.hits = self.words + n, self.hits + hits
        if hits < self.min_hit_rate * n:
            ids = self.sp.encode(texts, num_threads=threads)
            if len(cache) < self.max_words:
                self._learn(sample_words, ids[::8])
            return ids
        words = [t.split(" ") if t else [] for t in texts]  # "" encodes to []
        new = list(dict.fromkeys(w for ws in words for w in ws if w not in cache))
        room = self.max_words - len(cache)
        uncached = {}
        for k, (w, w_ids) in enumerate(zip(new, self.sp.encode(new, num_threads=threads))):
            (cache if k < room else uncached)[w] = w_ids if w else [self.space]
        out = []
        for ws in words:
            ids: list[int] = []
            for w in ws:
                ids.extend(cache[w] if w in cache else uncached[w])
            out.append(ids)
        return out

    def _learn(self, words: list[list[str]], ids: list[list[int]]) -> None:
        """Cache the words of texts encoded in context: their ids cut before each "▁" piece."""
        cache, room = self.cache, self.max_words - len(self.cache)
        for ws, row in zip(words, ids):
            if room <= 0:
                return
            cuts = np.flatnonzero(self._word_start[np.asarray(row, dtype=np.int64)]).tolist()
            if len(cuts) != len(ws):      # not expected for an exact model; learn nothing from it
                continue
            cuts.append(len(row))
            for k, w in enumerate(ws):
                if w not in cache:
                    cache[w] = row[cuts[k]:cuts[k + 1]]
                    room -= 1


_W: dict = {}  # per worker process: the tokenizer and the shared progress counter


def _init_worker(tok_path: str, counter: Any) -> None:
    _W["tok"], _W["counter"] = Tokenizer.load(tok_path), counter
    _W["encoder"] = WordCacheEncoder(_W["tok"])


def _encode_part(task: dict) -> dict:
    """Worker: encode one clean part into `<stem>.{train,valid}.{bin,idx}`, then write `<stem>.done.json`."""
    tok, counter = _W["tok"], _W["counter"]
    stem, eos = Path(task["stem"]), tok.eos_id
    writers = {s: _BinWriter(stem.with_name(f"{stem.name}.{s}")) for s in SPLITS}
    counts = {"docs_in": 0, "bad_docs": 0, "empty_docs": 0}
    errors: list[dict] = []
    texts: list[str] = []
    splits: list[str] = []

    def flush() -> None:
        ids = _W["encoder"].encode(texts, task["threads"])
        for s in SPLITS:
            rows = [r for r, sp in zip(ids, splits) if sp == s]
            if rows:
                lens = np.fromiter((len(r) + 1 for r in rows), IDX_DTYPE, len(rows))
                for r in rows:
                    r.append(eos)
                flat = np.fromiter(chain.from_iterable(rows), DTYPE, int(lens.sum()))
                writers[s].write(flat, np.cumsum(lens))
        with counter.get_lock():
            counter.value += len(texts)
        texts.clear()
        splits.clear()

    try:
        chars = 0
        for lineno, doc, err in iter_part(task["path"]):
            counts["docs_in"] += 1
            if err is not None:
                counts["bad_docs"] += 1
                if len(errors) < _MAX_ERRORS:
                    errors.append({"file": task["file"], "line": lineno, "error": err[:300]})
                continue
            if not doc["text"]:
                counts["empty_docs"] += 1
                continue
            texts.append(doc["text"])
            splits.append("valid" if is_valid_doc(doc_key(doc), task["seed"], task["valid_fraction"]) else "train")
            chars += len(doc["text"])
            if chars >= task["batch_chars"]:
                flush()
                chars = 0
        if texts:
            flush()
        files = {s: w.close() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    done = {"key": task["key"], "counts": counts, "errors": errors, "files": files}
    write_json_atomic(stem.with_name(stem.name + ".done.json"), done)
    return done


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished (joined) worker processes
    return ru.ru_utime + ru.ru_stime


def build_shards(cfg: Any, workers: Optional[int] = None) -> dict:
    """`make shards`: encode `corpus.out_dir` with the configured tokenizer into `shards.out_dir`.

    The tokenizer is `tokenizer.model` when set (e.g. KoGPT2's .spiece), else `tokenizer.dir`.
    Returns the manifest. Refuses an out_dir holding shards of another tokenizer.
    """
    from tqdm import tqdm

    from common.config import to_dict
    from common.schema import cpu_count

    s, out, clean = cfg.shards, Path(cfg.shards.out_dir), Path(cfg.corpus.out_dir)
    tok_path = cfg.tokenizer.model or cfg.tokenizer.dir
    tok = Tokenizer.load(tok_path)
    if tok.eos_id is None:
        raise ShardsError(f"{tok_path} has no </s> piece: documents are joined with eos; use a model that has one")
    if tok.vocab_size > 65536:
        raise ShardsError(f"{tok_path} has {tok.vocab_size} pieces; uint16 shards hold at most 65,536")
    if not (clean / "manifest.json").is_file():
        raise ShardsError(f"{clean}/manifest.json is missing: run `make corpus` first (corpus.out_dir)")
    parts = read_json(clean / "manifest.json")["parts"]
    inputs = {"clean_manifest_sha256": sha256_file(clean / "manifest.json"), "valid_fraction": s.valid_fraction,
              "seed": s.seed, "shard_tokens": s.shard_tokens}
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").is_file():
        old = read_json(out / "manifest.json")
        check_tokenizer(old, tok.sha256)  # never mix tokenizers in one directory
        if old.get("inputs") == inputs:
            log.info("%s is up to date (same corpus, tokenizer and settings): nothing to do", out)
            return old
        (out / "manifest.json").unlink()  # the old files are about to be replaced
    parts_dir = out / ".parts"
    parts_dir.mkdir(exist_ok=True)
    done: dict[int, dict] = {}
    tasks = []
    for k, p in enumerate(parts):
        stem = parts_dir / f"part-{k:05d}"
        key = {"file": p["file"], "sha256": p.get("sha256"), "tokenizer_sha256": tok.sha256,
               "seed": s.seed, "valid_fraction": s.valid_fraction}
        marker = parts_dir / f"part-{k:05d}.done.json"
        if marker.is_file() and read_json(marker).get("key") == key:
            done[k] = read_json(marker)
            continue
        tasks.append({"k": k, "file": p["file"], "path": str(clean / p["file"]), "stem": str(stem), "key": key,
                      "seed": s.seed, "valid_fraction": s.valid_fraction, "batch_chars": s.batch_chars,
                      "docs": p.get("docs", 0)})
    n = workers or s.workers or cpu_count()
    procs = max(1, min(n, len(tasks)))
    for t in tasks:
        t["threads"] = max(1, n // procs)  # few parts: SentencePiece threads inside each process
    log.info("%d parts to encode (%d already done) with %d processes x %d threads", len(tasks), len(done),
             procs, max(1, n // procs))
    t0, cpu0 = time.time(), _children_cpu()
    if tasks:
        import multiprocessing as mp
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        counter = ctx.Value("q", 0)
        bar = tqdm(total=sum(t["docs"] for t in tasks) or None, unit="doc", desc="encoding", disable=None)
        with ctx.Pool(procs, _init_worker, (str(tok.model_path), counter)) as pool:
            res = pool.map_async(_encode_part, tasks, chunksize=1)
            while not res.ready():
                res.wait(0.5)
                bar.update(counter.value - bar.n)
            for t, d in zip(tasks, res.get()):
                done[t["k"]] = d
        bar.update(counter.value - bar.n)
        bar.close()
    t1, cpu = time.time(), _children_cpu() - cpu0
    splits = {sp: merge_files([(parts_dir / done[k]["files"][sp]["bin"], parts_dir / done[k]["files"][sp]["idx"])
                               for k in range(len(parts))], out, sp, s.shard_tokens) for sp in SPLITS}
    _remove_stale(out, {e[x] for files in splits.values() for e in files for x in ("bin", "idx")})
    tok.save(out / "tokenizer")  # shards are self-contained: inspect and the trainer can decode them
    counts = {c: sum(d["counts"][c] for d in done.values()) for c in ("docs_in", "bad_docs", "empty_docs")}
    errors = [e for k in sorted(done) for e in done[k]["errors"]][:_MAX_ERRORS]
    encoded = sum(done[t["k"]]["files"][sp]["tokens"] for t in tasks for sp in SPLITS)
    manifest = _write_manifest(out, {"vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "sha256": tok.sha256},
                               splits, {"tokenizer": {"source": str(tok_path), "dir": "tokenizer"},
                                        "inputs": inputs, "counts": counts, "errors": errors,
                                        "encode": {"seconds": round(t1 - t0, 3), "cpu_seconds": round(cpu, 3),
                                                   "tokens": encoded,
                                                   "processes": procs, "workers": n},
                                        "config": to_dict(s)})
    shutil.rmtree(parts_dir)
    if counts["bad_docs"]:
        log.warning("%d bad documents skipped (first: %s); see %s/manifest.json 'errors'",
                    counts["bad_docs"], errors[0] if errors else "?", out)
    log.info("wrote %s: train %d tokens / %d docs, valid %d tokens / %d docs; encoded %d tokens in %.1f s "
             "(%.0f tokens/s)", out, manifest["splits"]["train"]["tokens"], manifest["splits"]["train"]["docs"],
             manifest["splits"]["valid"]["tokens"], manifest["splits"]["valid"]["docs"], encoded, t1 - t0,
             encoded / max(t1 - t0, 1e-9))
    return manifest


# ----------------------------------------------------------------------------------------------------
# CLI


def inspect(path: str | os.PathLike, docs: int = 2, tokenizer: Optional[str] = None, chars: int = 200) -> str:
    """Counts per split, the bad-document tally, and the first `docs` documents of each split decoded."""
    p = Path(path)
    d = p.parent if p.is_file() else p
    m, _ = _load_manifest(d)
    lines = [f"{d}: {m['format']}, dtype {m['dtype']}, vocab {m['vocab_size']}, eos {m['eos_id']}, "
             f"tokenizer sha256 {m['tokenizer_sha256']}",
             f"{'split':<7}{'files':>6}{'docs':>12}{'tokens':>15}{'tokens/doc':>12}"]
    shards = {s: TokenShards(d, s) for s in m["splits"]}
    for s, sh in shards.items():
        lines.append(f"{s:<7}{len(sh.files):>6}{sh.num_docs:>12,}{sh.num_tokens:>15,}"
                     f"{sh.num_tokens / max(sh.num_docs, 1):>12.1f}")
    if "counts" in m:
        lines.append("documents: " + ", ".join(f"{k} {v:,}" for k, v in m["counts"].items()))
    tok_dir = Path(tokenizer) if tokenizer else d / "tokenizer"
    if docs and tok_dir.exists():
        tok = Tokenizer.load(tok_dir)
        check_tokenizer(m, tok.sha256)
        for s, sh in shards.items():
            for i in range(min(docs, sh.num_docs)):
                ids = sh.document(i)
                text = tok.decode(ids[:-1])
                lines.append(f"--- {s} doc {i} ({len(ids)} tokens incl. eos): "
                             f"{text[:chars]!r}{' ...' if len(text) > chars else ''}")
    elif docs:
        lines.append(f"(no tokenizer at {tok_dir}: pass --tokenizer PATH to decode documents)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`build` (default; from --config), `inspect PATH`, `merge OUT IN [IN ...]`."""
    from common.config import ConfigError, add_config_args, config_from_args, save_resolved
    from common.log import setup_logging
    from corpus.tokenizer import TokenizerError

    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv and argv[0] in ("build", "inspect", "merge") else "build"
    p = argparse.ArgumentParser(prog=f"python -m corpus.shards {cmd}", description=__doc__.split("\n")[0])
    if cmd == "build":
        add_config_args(p)
        p.add_argument("--workers", type=int, default=None, help="processes (default shards.workers; 0 = all cores)")
    elif cmd == "inspect":
        p.add_argument("path", help="a shards directory (or one of its .bin files)")
        p.add_argument("--docs", type=int, default=2, help="documents to decode per split")
        p.add_argument("--tokenizer", default=None, help="tokenizer to decode with (default PATH/tokenizer)")
    else:
        p.add_argument("out", help="output shards directory")
        p.add_argument("inputs", nargs="+", help="shards directories, merged in this order")
        p.add_argument("--shard-tokens", type=int, default=500_000_000)
    args = p.parse_args(argv)
    setup_logging()
    try:
        if cmd == "build":
            cfg = config_from_args(args)
            build_shards(cfg, workers=args.workers)
            save_resolved(cfg, Path(cfg.shards.out_dir) / "config.yaml")
            print(inspect(cfg.shards.out_dir, docs=0))
        elif cmd == "inspect":
            print(inspect(args.path, args.docs, args.tokenizer))
        else:
            merge_shard_dirs(args.inputs, args.out, args.shard_tokens)
            print(inspect(args.out, docs=0))
    except (ShardsError, TokenizerError) as e:
        log.error("%s", e)
        return 2
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
