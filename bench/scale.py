"""The data stages at multi-GB scale: clean -> tokenizer -> shards, measured and projected to 20 GB.

    .venv/bin/python bench/scale.py run --sizes 0.1 0.3 1 [--root /work/scale] [--workers 2]
    .venv/bin/python bench/scale.py spm --corpus-size 1 --sentences 125000 500000 1000000 [5000000]
    .venv/bin/python bench/scale.py vocab --corpus-size 1   # every trained 50k vocab on the same held-out docs
    .venv/bin/python bench/scale.py report          # fits + projection from the saved measurements

`run`: for each size (GB of document text), generates the corpus with bench/make_scale_corpus.py
under --root if missing (never in the repo), then runs each stage in a fresh process with the base
config's settings (50,000 pieces; tokenizer.sample_sentences = 25 M x size / 20 GB, the base cap
scaled to the size) and records wall s, CPU s of the coordinator (the stage's own process) and of
its workers (children), peak RSS of the coordinator and of the largest worker, and output bytes.
`spm`: SentencePiece BPE 50k training time/RSS at several sample sizes drawn from one clean corpus,
and tokens per character on the same held-out documents for each (what a smaller sample loses).
Fits: CPU seconds as a + c * bytes (the stages stream: linear plus a fixed start-up cost);
SentencePiece seconds and every peak RSS as a * x^b (log-log least squares). Projection for 20 GB
on 16 and 64 cores: coordinator CPU + workers' CPU / cores (spm: its measured serial share + the
rest / cores). Results: bench/results/scale.json (`projection`: minutes per stage for 20 GB on 16
cores and the largest measured input), table printed. Machine: whatever runs it (the committed
figures: a 2-core x86_64 VM shared with other jobs, so wall times are noisy; CPU seconds are not).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

RESULT = REPO / "bench" / "results" / "scale.json"
RAW = "scale_raw.json"            # measurements, kept beside the corpora (--root), merged across calls
BASE_SENTENCES = 25_000_000       # configs/base.yaml's cap (schema default) at 20 GB
TARGET_BYTES = 20e9


# ----------------------------------------------------------------------------------------------------
# child side: one stage in a fresh process


def _usage(t0: float, c0: float) -> dict:
    import resource

    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.time() - t0, 2), "coord_cpu_s": round(time.process_time() - c0, 2),
            "workers_cpu_s": round(ch.ru_utime + ch.ru_stime, 2),
            "coord_rss_mb": round(me.ru_maxrss / 1024, 1), "worker_rss_mb": round(ch.ru_maxrss / 1024, 1)}


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and ".progress" not in p.parts)


def child(stage: str, spec: dict) -> dict:
    import logging

    from common.config import load_config
    from common.log import setup_logging

    setup_logging(logging.INFO)
    cfg = load_config(spec["config"], spec["sets"])
    w = spec["workers"]
    if stage == "clean":
        import datasketch.lsh  # noqa: F401  (import cost is not the stage's)

        from corpus.pipeline import run_clean
        t0, c0 = time.time(), time.process_time()
        m = run_clean(cfg, workers=w, fresh=True)
        r = _usage(t0, c0)
        r.update(output_bytes=sum(p["size"] for p in m["parts"]), docs_out=m["docs"], text_bytes_out=m["bytes"],
                 docs_in=sum(s["docs_in"] for s in m["sources"].values()),
                 dedup={k: m["dedup"][k] for k in ("exact", "near", "index_exact_keys", "index_near_keys")})
        return r
    if stage == "tokenizer":
        import resource

        import corpus.tokenizer as T
        phases: dict = {}

        def timed(name, fn):
            def run(*a, **k):
                t, c = time.time(), time.process_time()
                ch = resource.getrusage(resource.RUSAGE_CHILDREN)
                out = fn(*a, **k)
                ch2 = resource.getrusage(resource.RUSAGE_CHILDREN)
                phases[name] = {"wall_s": round(time.time() - t, 2), "coord_cpu_s": round(time.process_time() - c, 2),
                                "workers_cpu_s": round(ch2.ru_utime + ch2.ru_stime - ch.ru_utime - ch.ru_stime, 2)}
                return out
            return run

        T.sample_sentences = timed("sampling", T.sample_sentences)
        T.train_spm_logged = timed("training", T.train_spm_logged)   # SentencePiece in a child process
        t0, c0 = time.time(), time.process_time()
        T.train_tokenizer(cfg, force=True)
        r = _usage(t0, c0)
        tj = json.loads((Path(cfg.tokenizer.dir) / "tokenizer.json").read_text())
        rep = json.loads((Path(cfg.tokenizer.dir) / "report.json").read_text())
        st = tj["training"]["stats"]
        r.update(phases=phases, output_bytes=_dir_bytes(Path(cfg.tokenizer.dir)),
                 sentences=st["sentences_sampled"], sentences_estimated=st.get("sentences_estimated"),
                 line_probability=st.get("line_probability"), tokens_per_char=rep["tokens_per_char"],
                 sample_bytes=st.get("sample_bytes"))
        return r
    if stage == "shards":
        from corpus.shards import build_shards
        t0, c0 = time.time(), time.process_time()
        m = build_shards(cfg, workers=w)
        r = _usage(t0, c0)
        enc = m["encode"]
        r.update(output_bytes=_dir_bytes(Path(cfg.shards.out_dir)), tokens=enc["tokens"],
                 tokens_per_cpu_s=round(enc["tokens"] / max(enc["cpu_seconds"], 1e-9)))
        return r
    if stage == "spm":
        return spm_child(cfg, spec)
    raise SystemExit(f"unknown stage {stage}")


def spm_child(cfg, spec: dict) -> dict:
    """Sample `n` sentences, train 50k BPE on them (timed, RSS), report tokens/char on fixed held-out docs."""
    import resource

    from corpus.sentence_sample import sample_sentences
    from corpus.tokenizer import Tokenizer, tokenizer_report, train_spm_file

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    sample = out / "sentences.txt"
    st = sample_sentences(cfg, sample, workers=spec["workers"])
    heldout = st.pop("heldout")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t, c = time.time(), time.process_time()
    train_spm_file(sample, cfg.tokenizer, out, spec["workers"])
    wall, cpu = time.time() - t, time.process_time() - c
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rep = tokenizer_report(Tokenizer(out / "spm.model"), heldout, spec["workers"])
    return {"sentences": st["sentences_sampled"], "sample_bytes": sample.stat().st_size,
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "rss_mb": round(rss, 1),
            "rss_before_mb": round(rss0, 1), "threads": spec["workers"], "heldout_docs": rep["docs"],
            "tokens_per_char": rep["tokens_per_char"], "tokens_per_word": rep["tokens_per_word"]}


def _run_child(stage: str, spec: dict, log_path: Path) -> dict:
    with open(log_path, "w") as logf:
        r = subprocess.run([sys.executable, __file__, "child", stage, json.dumps(spec)], stdout=subprocess.PIPE,
                           stderr=logf, text=True, cwd=REPO)
    if r.returncode:
        raise SystemExit(f"{stage} failed (exit {r.returncode}); log: {log_path}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------
# parent side


def _load_raw(root: Path) -> dict:
    p = root / RAW
    return json.loads(p.read_text()) if p.is_file() else {"runs": {}, "spm": {}}


def _save_raw(root: Path, raw: dict) -> None:
    tmp = root / (RAW + ".tmp")
    tmp.write_text(json.dumps(raw, indent=1))
    os.replace(tmp, root / RAW)


def cmd_run(a) -> None:
    root: Path = a.root
    raw = _load_raw(root)
    for gb in a.sizes:
        corpus = root / f"g{gb:g}"
        if not (corpus / "scale_corpus.json").is_file():
            subprocess.run([sys.executable, str(REPO / "bench" / "make_scale_corpus.py"), "--gb", str(gb),
                            "--out", str(corpus), "--workers", str(a.workers)], check=True)
        desc = json.loads((corpus / "scale_corpus.json").read_text())
        run = root / f"run{gb:g}"
        cap = max(10_000, round(BASE_SENTENCES * desc["text_bytes"] / TARGET_BYTES))
        sets = [f"corpus.out_dir={run}/clean", f"tokenizer.dir={run}/tokenizer", f"shards.out_dir={run}/shards",
                "tokenizer.vocab_size=50000", f"tokenizer.sample_sentences={cap}", f"tokenizer.threads={a.workers}",
                "shards.valid_fraction=0.005"]
        spec = {"config": str(corpus / "corpus.yaml"), "sets": sets, "workers": a.workers}
        rec = {"gb": gb, "input_text_bytes": desc["text_bytes"], "input_file_bytes": sum(
            f["size"] for f in desc["files"].values()), "docs": desc["docs"], "sample_cap": cap, "stages": {}}
        for stage in a.stages:
            if stage == "shards" and a.shards_tokenizer:   # e.g. a smaller run's 50k vocab: no wait for this size's
                spec = dict(spec, sets=spec["sets"] + [f"tokenizer.dir={a.shards_tokenizer}"])
            print(f"[{time.strftime('%H:%M:%S')}] {gb:g} GB: {stage} ...", flush=True)
            rec["stages"][stage] = r = _run_child(stage, spec, run.parent / f"run{gb:g}-{stage}.log")
            print(f"    {json.dumps(r)[:300]}", flush=True)
            raw = _load_raw(root)   # re-read: another scale.py may have saved meanwhile
            old = raw["runs"].get(f"{gb:g}", {"stages": {}})
            old.update({k: v for k, v in rec.items() if k != "stages"})
            old["stages"][stage] = r
            raw["runs"][f"{gb:g}"] = old
            _save_raw(root, raw)
    cmd_report(a)


def cmd_spm(a) -> None:
    root: Path = a.root
    run = root / f"run{a.corpus_size:g}"
    for n in a.sentences:
        spec = {"config": str(root / f"g{a.corpus_size:g}" / "corpus.yaml"),
                "sets": [f"corpus.out_dir={run}/clean", "tokenizer.vocab_size=50000", f"tokenizer.sample_sentences={n}",
                         "shards.valid_fraction=0.005"],
                "workers": a.workers, "out": str(root / f"spm{n}")}
        print(f"[{time.strftime('%H:%M:%S')}] spm {n:,} sentences ...", flush=True)
        r = _run_child("spm", spec, root / f"spm{n}.log")
        print(f"    {json.dumps(r)}", flush=True)
        raw = _load_raw(root)
        raw.setdefault("spm", {})[str(n)] = r
        _save_raw(root, raw)
    cmd_report(a)


def cmd_vocab(a) -> None:
    """Tokens per character of every 50k tokenizer under --root on the same held-out documents."""
    from corpus.docs import doc_key, is_valid_doc, iter_documents
    from corpus.tokenizer import Tokenizer, tokenizer_report

    root: Path = a.root
    raw = _load_raw(root)
    clean = root / f"run{a.corpus_size:g}" / "clean"
    docs = []
    for d in iter_documents(clean):
        if is_valid_doc(doc_key(d), 1234, 0.005):
            docs.append(d["text"])
            if len(docs) >= a.docs:
                break
    raw["vocab"] = {"heldout": f"{len(docs)} validation-split documents of {clean.name} ({a.corpus_size:g} GB run)",
                    "models": {}}
    for tj in sorted(root.glob("*/tokenizer/tokenizer.json")) + sorted(root.glob("spm*/spm.model")):
        tok = Tokenizer.load(tj)
        meta = json.loads(tj.read_text()) if tj.suffix == ".json" else {}
        n = (meta.get("training") or {}).get("stats", {}).get("sentences_sampled")
        if n is None:
            n = raw.get("spm", {}).get(tj.parent.name[3:], {}).get("sentences")
        rep = tokenizer_report(tok, docs, a.workers)
        raw["vocab"]["models"][str(tj.parent.relative_to(root))] = {
            "sentences": n, "tokens_per_char": rep["tokens_per_char"], "tokens_per_word": rep["tokens_per_word"],
            "byte_fallback_rate": rep["byte_fallback_rate"]}
        print(tj.parent.relative_to(root), n, round(rep["tokens_per_char"], 4), flush=True)
    _save_raw(root, raw)
    cmd_report(a)


def _fit_linear(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """y = a + c x, least squares (a clipped at >= 0); one point: a = 0."""
    import numpy as np

    if len(xs) < 2:
        return 0.0, ys[0] / xs[0]
    c, a = np.polyfit(xs, ys, 1)
    if a < 0:
        return 0.0, float(np.dot(xs, ys) / np.dot(xs, xs))
    return float(a), float(c)


def _fit_power(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """y = a x^b, least squares in log-log; one point: b = 1."""
    import numpy as np

    if len(xs) < 2:
        return ys[0] / xs[0], 1.0
    b, la = np.polyfit(np.log(xs), np.log(np.maximum(ys, 1e-9)), 1)
    return float(math.exp(la)), float(b)


def cmd_report(a) -> None:
    raw = _load_raw(a.root)
    runs = sorted(raw["runs"].values(), key=lambda r: r["input_text_bytes"])
    fits: dict = {}
    proj: dict = {16: {}, 64: {}}
    mem: dict = {}
    X = TARGET_BYTES

    def series(stage: str, get) -> tuple[list, list]:
        pts = [(r["input_text_bytes"], get(r["stages"][stage])) for r in runs if stage in r["stages"]]
        return [p[0] for p in pts], [p[1] for p in pts]

    for stage in ("clean", "shards"):
        xs, coord = series(stage, lambda s: s["coord_cpu_s"])
        if not xs:
            continue
        _, work = series(stage, lambda s: s["workers_cpu_s"])
        fc, fw = _fit_linear(xs, coord), _fit_linear(xs, work)
        _, rc = series(stage, lambda s: s["coord_rss_mb"])
        _, rw = series(stage, lambda s: s["worker_rss_mb"])
        fits[stage] = {"coord_cpu_s": fc, "workers_cpu_s": fw, "coord_rss_mb": _fit_power(xs, rc),
                       "worker_rss_mb": _fit_power(xs, rw)}
        for n in proj:
            proj[n][stage] = (fc[0] + fc[1] * X + (fw[0] + fw[1] * X) / n) / 60
        mem[stage] = {k.replace("_rss_mb", ""): fits[stage][k][0] * X ** fits[stage][k][1] / 1024 for k in ("coord_rss_mb", "worker_rss_mb")}
    xs, samp_c = series("tokenizer", lambda s: s["phases"]["sampling"]["coord_cpu_s"])
    spm_pts = [(r["sentences"], r["train_wall_s"], r["train_cpu_s"], r["rss_mb"], r["threads"])
               for r in raw.get("spm", {}).values()]
    for r in runs:
        if "tokenizer" in r["stages"]:
            tk = r["stages"]["tokenizer"]
            tr = tk["phases"]["training"]
            spm_pts.append((tk["sentences"], tr["wall_s"], tr["coord_cpu_s"] + tr["workers_cpu_s"],
                            max(tk["coord_rss_mb"], tk["worker_rss_mb"]), 2))
    spm_pts.sort()
    if xs:
        _, samp_w = series("tokenizer", lambda s: s["phases"]["sampling"]["workers_cpu_s"])
        fsc, fsw = _fit_linear(xs, samp_c), _fit_linear(xs, samp_w)
        fits["tokenizer_sampling"] = {"coord_cpu_s": fsc, "workers_cpu_s": fsw}
        ns = [p[0] for p in spm_pts]
        fcpu = _fit_power(ns, [p[2] for p in spm_pts])
        frss = _fit_power(ns, [p[3] for p in spm_pts])
        # serial share from the 2-thread runs: wall = s + p/2, cpu = s + p
        shares = [max(0.0, min(1.0, (2 * w - c) / c)) for _, w, c, _, _ in spm_pts if c > 0]
        serial = sum(shares) / len(shares) if shares else 1.0
        fits["spm_training"] = {"cpu_s_vs_sentences": fcpu, "rss_mb_vs_sentences": frss, "serial_share": serial}
        from common.schema import TokenizerConfig

        default_cap = TokenizerConfig().sample_sentences
        caps = sorted({BASE_SENTENCES, 10_000_000, 5_000_000, default_cap}, reverse=True)
        for n in proj:
            samp = fsc[0] + fsc[1] * X + (fsw[0] + fsw[1] * X) / n
            for cap in caps:
                cpu = fcpu[0] * cap ** fcpu[1]
                proj[n].setdefault("tokenizer_by_cap", {})[cap] = (samp + cpu * (serial + (1 - serial) / n)) / 60
            proj[n]["tokenizer_sampling"] = samp / 60
            proj[n]["tokenizer"] = proj[n]["tokenizer_by_cap"][default_cap]   # sampling + training, default cap
        fits["spm_training"]["default_cap"] = default_cap
        mem["spm_training"] = {cap: frss[0] * cap ** frss[1] / 1024 for cap in caps}
    largest = max((r["input_text_bytes"] for r in runs), default=0)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs), Python "
                   f"{platform.python_version()}",
        "runs": runs, "spm": sorted(raw.get("spm", {}).values(), key=lambda r: r["sentences"]), "fits": fits,
        "vocab_by_sample": raw.get("vocab"),
        "projection": {
            "target_bytes": X, "largest_measured_input_bytes": largest,
            "minutes_16_cores": {k: round(v, 2) if not isinstance(v, dict) else {str(c): round(m, 1) for c, m in v.items()}
                                 for k, v in proj[16].items()},
            "minutes_64_cores": {k: round(v, 2) if not isinstance(v, dict) else {str(c): round(m, 1) for c, m in v.items()}
                                 for k, v in proj[64].items()},
            "peak_gb": {k: {str(kk): round(vv, 2) for kk, vv in v.items()} for k, v in mem.items()},
            "method": "CPU s fitted as a + c*bytes per stage (coordinator and workers apart); minutes on N cores = "
                      "coordinator + workers/N; SentencePiece CPU s fitted as a*sentences^b, its serial share from "
                      "2-thread wall vs CPU; RSS as a*x^b",
        }}
    write_result(RESULT, result)
    print(table(result))


def table(r: dict) -> str:
    rows = ["| input GB (text) | stage | wall s | coord CPU s | workers CPU s | coord RSS MB | worker RSS MB | output MB |",
            "|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        for st, s in run["stages"].items():
            rows.append(f"| {run['input_text_bytes'] / 1e9:.2f} | {st} | {s['wall_s']:.0f} | {s['coord_cpu_s']:.1f} | "
                        f"{s['workers_cpu_s']:.1f} | {s['coord_rss_mb']:.0f} | {s['worker_rss_mb']:.0f} | "
                        f"{s['output_bytes'] / 1e6:.0f} |")
    if r["spm"]:
        rows += ["", "| sentences | sample MB | train wall s (threads) | train CPU s | RSS MB | tokens/char held-out |",
                 "|---|---|---|---|---|---|"]
        for s in r["spm"]:
            rows.append(f"| {s['sentences']:,} | {s['sample_bytes'] / 1e6:.0f} | {s['train_wall_s']:.0f} ({s['threads']}) | "
                        f"{s['train_cpu_s']:.0f} | {s['rss_mb']:.0f} | {s['tokens_per_char']:.4f} |")
    v = r.get("vocab_by_sample")
    if v:
        rows += ["", f"tokens per character on {v['heldout']}:", "| tokenizer | sampled sentences | tokens/char | tokens/eojeol |",
                 "|---|---|---|---|"]
        for name, m in sorted(v["models"].items(), key=lambda kv: kv[1]["sentences"] or 0):
            rows.append(f"| {name} | {m['sentences'] or 0:,} | {m['tokens_per_char']:.4f} | {m['tokens_per_word']:.4f} |")
    p = r["projection"]
    rows += ["", f"projection to {p['target_bytes'] / 1e9:.0f} GB (largest measured: {p['largest_measured_input_bytes'] / 1e9:.2f} GB):",
             f"  16 cores, minutes: {json.dumps(p['minutes_16_cores'])}",
             f"  64 cores, minutes: {json.dumps(p['minutes_64_cores'])}",
             f"  peak GB per process: {json.dumps(p['peak_gb'])}"]
    return "\n".join(rows)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "spm", "vocab", "report"):
        s = sub.add_parser(name)
        s.add_argument("--root", type=Path, default=Path("/work/scale"), help="corpora and stage outputs (not the repo)")
        s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
        if name == "run":
            s.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.3, 1.0])
            s.add_argument("--stages", nargs="+", default=["clean", "tokenizer", "shards"])
            s.add_argument("--shards-tokenizer", type=Path, help="tokenizer dir for the shards stage (default: this "
                           "size's own, trained by the tokenizer stage)")
        if name in ("spm", "vocab"):
            s.add_argument("--corpus-size", type=float, default=1.0)
            s.add_argument("--docs", type=int, default=2000, help="vocab: held-out documents to measure on")
            s.add_argument("--sentences", type=int, nargs="+", default=[125_000, 500_000, 1_000_000])
    a = p.parse_args(argv)
    {"run": cmd_run, "spm": cmd_spm, "vocab": cmd_vocab, "report": cmd_report}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
