"""Shard encoding throughput (tokens/s, per core) on real Korean text.

    .venv/bin/python bench/shards_bench.py [--corpus ../shared/data/ko_dev_corpus.txt] [--tokenizer DIR|MODEL]
                                           [--workers 1 2] [--lines-per-doc 10]

Builds a clean-corpus directory (CONTRACTS.md format, 2 zstd parts) from the corpus file, grouping
`--lines-per-doc` lines into one document (paragraphs joined with '\\n'), then runs `build_shards`
with each worker count. Reported: encode-phase tokens/s (reading zstd JSONL, SentencePiece, writing
uint16) total and per worker process, the whole build's wall time (plus merge, sha256, manifest),
and single-thread `sp.encode` alone for reference. Target: >= 1M tokens/s per core. Without
--tokenizer a demo-size (4,000) tokenizer is trained on the corpus first. Writes
bench/results/shards.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

import zstandard as zstd  # noqa: E402

from common.config import load_config  # noqa: E402
from common.io import sha256_file  # noqa: E402
from common.schema import TokenizerConfig, cpu_count  # noqa: E402
from corpus.shards import build_shards  # noqa: E402
from corpus.tokenizer import Tokenizer, train_spm_file  # noqa: E402


def make_clean(corpus: Path, out: Path, lines_per_doc: int, parts: int = 2) -> list[str]:
    lines = [x.strip() for x in corpus.read_text(encoding="utf-8").splitlines() if x.strip()]
    docs = ["\n".join(lines[i:i + lines_per_doc]) for i in range(0, len(lines), lines_per_doc)]
    out.mkdir(parents=True)
    entries = []
    for k in range(parts):
        body = "".join(json.dumps({"text": t, "source": "dev", "id": f"dev-{i}"}, ensure_ascii=False) + "\n"
                       for i, t in enumerate(docs) if i % parts == k).encode("utf-8")
        name = f"part-{k:05d}.jsonl.zst"
        (out / name).write_bytes(zstd.ZstdCompressor(level=3).compress(body))
        entries.append({"file": name, "docs": len(docs[k::parts]), "bytes": len(body),
                        "sha256": sha256_file(out / name)})
    (out / "manifest.json").write_text(json.dumps({"format": "kogpt-clean-v1", "parts": entries}))
    return docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/data/ko_dev_corpus.txt"))
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir or .model (default: train a 4,000 one)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, cpu_count()])
    ap.add_argument("--lines-per-doc", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "bench/results/shards.json"))
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if not corpus.is_file():
        print(f"skipped: {corpus} not found")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="shardbench-") as tmp:
        tmp = Path(tmp)
        docs = make_clean(corpus, tmp / "clean", args.lines_per_doc)
        if args.tokenizer is None:
            sent = tmp / "sentences.txt"
            sent.write_text("\n".join(line for d in docs for line in d.split("\n")) + "\n", encoding="utf-8")
            train_spm_file(sent, TokenizerConfig(vocab_size=4000, num_unused=8), tmp / "tok", cpu_count())
            args.tokenizer = str(tmp / "tok" / "spm.model")
        tok = Tokenizer.load(args.tokenizer)
        chars = sum(map(len, docs))
        t0, c0 = time.perf_counter(), time.process_time()
        ref_ids = tok.sp.encode(docs, num_threads=1)
        enc_s, enc_cpu = time.perf_counter() - t0, time.process_time() - c0
        n_tok = sum(map(len, ref_ids))
        ref = {"what": "sp.encode only, 1 thread", "tokens": n_tok, "seconds": round(enc_s, 3),
               "cpu_seconds": round(enc_cpu, 3), "tokens_per_s": round(n_tok / enc_s),
               "tokens_per_cpu_s": round(n_tok / enc_cpu), "chars_per_token": round(chars / n_tok, 3)}
        print(json.dumps(ref), flush=True)
        for w in args.workers:
            cfg = load_config(None, [f"corpus.out_dir={tmp / 'clean'}", f"tokenizer.model={args.tokenizer}",
                                     f"shards.out_dir={tmp / f'shards{w}'}", "shards.valid_fraction=0.005"])
            t0 = time.perf_counter()
            m = build_shards(cfg, workers=w)
            wall = time.perf_counter() - t0
            enc = m["encode"]
            row = {"workers": w, "processes": enc["processes"], "tokens": enc["tokens"], "docs": len(docs),
                   "encode_s": enc["seconds"], "build_wall_s": round(wall, 3),
                   "tokens_per_s": round(enc["tokens"] / enc["seconds"]),
                   "tokens_per_s_per_core": round(enc["tokens"] / enc["seconds"] / w),
                   "encode_cpu_s": enc["cpu_seconds"], "tokens_per_cpu_s": round(enc["tokens"] / enc["cpu_seconds"]),
                   "sha256": [f["sha256"][:12] for s in m["splits"] for f in m["splits"][s]["files"]]}
            from corpus.shards import TokenShards

            got = {}
            for split in ("train", "valid"):
                sh = TokenShards(tmp / f"shards{w}", split)
                for i in range(sh.num_docs):
                    got[len(got)] = sh.document(i)
            row["equals_sp_encode"] = sorted(len(v) - 2 for v in got.values()) == sorted(map(len, ref_ids))  # <s>, </s>
            rows.append(row)
            print(json.dumps(row), flush=True)
    same = len({tuple(r["sha256"]) for r in rows}) == 1
    print(f"\nshard encoding: {corpus.name} as {len(docs):,} docs ({chars:,} chars), tokenizer vocab "
          f"{tok.vocab_size:,} ({Path(args.tokenizer).name}), {cpu_count()} cores")
    print(f"{'workers':>8}{'tokens':>12}{'encode s':>10}{'wall s':>9}{'tok/s':>12}{'tok/s/core':>12}"
          f"{'cpu s':>8}{'tok/cpu-s':>12}")
    print(f"{'sp only':>8}{ref['tokens']:>12,}{ref['seconds']:>10.2f}{'':>9}{ref['tokens_per_s']:>12,}"
          f"{ref['tokens_per_s']:>12,}{ref['cpu_seconds']:>8.2f}{ref['tokens_per_cpu_s']:>12,}")
    for r in rows:
        print(f"{r['workers']:>8}{r['tokens']:>12,}{r['encode_s']:>10.2f}{r['build_wall_s']:>9.2f}"
              f"{r['tokens_per_s']:>12,}{r['tokens_per_s_per_core']:>12,}{r['encode_cpu_s']:>8.2f}"
              f"{r['tokens_per_cpu_s']:>12,}")
    print(f"identical shards across worker counts: {same}; target >= 1,000,000 tok/s/core")
    result = {"bench": "shards", "corpus": str(corpus), "docs": len(docs), "chars": chars,
              "tokenizer_vocab": tok.vocab_size, "machine": {"cpus": cpu_count(), "platform": platform.platform()},
              "sp_encode_1thread": ref, "rows": rows, "identical_across_workers": same,
              "target_tokens_per_s_per_core": 1_000_000}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
