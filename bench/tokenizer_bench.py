"""Tokenizer training time and peak memory: ours (corpus.tokenizer) next to the `spm_train` CLI.

    .venv/bin/python bench/tokenizer_bench.py [--corpus ../shared/data/ko_dev_corpus.txt] [--vocab 4000 50000]

Both train on the same sentence file (the corpus's non-empty lines) with the same SentencePiece
settings (`corpus.tokenizer.spm_training_args`), each in its own process; wall time includes process
start, and peak memory is that process's maximum RSS (getrusage via wait4). The target is ours within
1.1x of spm_train. `spm_train` comes from the OS package (`apt-get install sentencepiece`); without it
that column is skipped. Note the versions in the output: pip's sentencepiece and the OS's spm_train
may differ. Writes bench/results/tokenizer.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

from common.schema import TokenizerConfig, cpu_count  # noqa: E402
from corpus.tokenizer import spm_training_args  # noqa: E402

SIZES = {4000: dict(num_unused=8), 50000: dict(num_unused=100)}  # demo.yaml / base settings


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of a child process; raises if it fails.

    CPU seconds (user + system, all threads) are reported too because this VM's 2 cores are shared:
    wall time there depends on the neighbours' load, CPU time much less."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {err[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def cli_flags(args: dict) -> list[str]:
    out = []
    for k, v in args.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, list):
            v = ",".join(v)
        out.append(f"--{k}={v}")
    return out


def pieces(model: Path) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/data/ko_dev_corpus.txt"))
    ap.add_argument("--vocab", type=int, nargs="+", default=[4000, 50000])
    ap.add_argument("--threads", type=int, default=0, help="SentencePiece threads (0 = all cores)")
    ap.add_argument("--out", default=str(REPO / "bench/results/tokenizer.json"))
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if not corpus.is_file():
        print(f"skipped: {corpus} not found")
        return 0
    threads = args.threads or cpu_count()
    spm_train = shutil.which("spm_train")
    import sentencepiece

    spm_version = "absent"
    if spm_train:
        r = subprocess.run([spm_train, "--version"], capture_output=True, text=True)
        spm_version = (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
    rows = []
    with tempfile.TemporaryDirectory(prefix="tokbench-") as tmp:
        tmp = Path(tmp)
        sent = tmp / "sentences.txt"
        n = 0
        with open(corpus, encoding="utf-8") as f, open(sent, "w", encoding="utf-8") as g:
            for line in f:
                line = line.strip()
                if line:
                    g.write(line + "\n")
                    n += 1
        for vocab in args.vocab:
            t = TokenizerConfig(vocab_size=vocab, **SIZES.get(vocab, {}))
            ours_dir = tmp / f"ours{vocab}"
            code = ("import sys; sys.path.insert(0, %r)\n"
                    "from common.schema import TokenizerConfig\nfrom corpus.tokenizer import train_spm_file\n"
                    "train_spm_file(%r, TokenizerConfig(vocab_size=%d, num_unused=%d), %r, %d)\n"
                    % (str(REPO), str(sent), vocab, t.num_unused, str(ours_dir), threads))
            ours_s, ours_cpu, ours_mb = run_measured([sys.executable, "-c", code])
            row = {"vocab": vocab, "sentences": n, "threads": threads, "ours_s": round(ours_s, 2),
                   "ours_cpu_s": round(ours_cpu, 2), "ours_peak_mib": round(ours_mb, 1)}
            if spm_train:
                flags = cli_flags(spm_training_args(t, str(sent), str(tmp / f"cli{vocab}"), threads))
                cli_s, cli_cpu, cli_mb = run_measured([spm_train] + flags)
                row.update(spm_train_s=round(cli_s, 2), spm_train_cpu_s=round(cli_cpu, 2),
                           spm_train_peak_mib=round(cli_mb, 1), ratio=round(ours_s / cli_s, 3),
                           cpu_ratio=round(ours_cpu / cli_cpu, 3),
                           same_pieces=pieces(ours_dir / "spm.model") == pieces(tmp / f"cli{vocab}.model"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    hdr = (f"{'vocab':>7}{'ours s':>9}{'cpu s':>9}{'MiB':>8}{'spm_train s':>13}{'cpu s':>9}{'MiB':>8}"
           f"{'wall x':>8}{'cpu x':>7}{'same pieces':>13}")
    print(f"\ntokenizer training on {corpus.name} ({n:,} sentences), {threads} threads, "
          f"sentencepiece {sentencepiece.__version__} (python) / spm_train {spm_version}")
    print(hdr)
    for r in rows:
        nan = float("nan")
        print(f"{r['vocab']:>7}{r['ours_s']:>9.1f}{r['ours_cpu_s']:>9.1f}{r['ours_peak_mib']:>8.0f}"
              f"{r.get('spm_train_s', nan):>13.1f}{r.get('spm_train_cpu_s', nan):>9.1f}"
              f"{r.get('spm_train_peak_mib', nan):>8.0f}{r.get('ratio', nan):>8.3f}{r.get('cpu_ratio', nan):>7.3f}"
              f"{str(r.get('same_pieces', '-')):>13}")
    result = {"bench": "tokenizer", "corpus": str(corpus), "machine": {
        "cpus": cpu_count(), "platform": platform.platform(), "processor": platform.machine()},
        "sentencepiece_python": sentencepiece.__version__, "spm_train": spm_version, "target_ratio": 1.1,
        "rows": rows}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
