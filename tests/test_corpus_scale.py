"""Issue 18's behaviour on small data: deterministic clean output for any worker count, the scale
corpus generator's duplicates found at the expected rate, progress lines in logs, seeded sampling."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import corpus.clean
import corpus.pipeline as P
import corpus.plan
from common.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "ko_dev_corpus.txt"
sys.path.insert(0, str(ROOT / "bench"))


def _dev_head(tmp: Path, n: int) -> Path:
    """The first n lines of the dev corpus (skips the test when the shared data is absent)."""
    if not DEV.is_file():
        pytest.skip("../shared/data/ko_dev_corpus.txt not available")
    out = tmp / "dev_head.txt"
    with open(DEV, encoding="utf-8") as f:
        out.write_text("".join(line for _, line in zip(range(n), f)), encoding="utf-8")
    return out


def _generate(tmp: Path, mb: float, monkeypatch, lines: int = 20000) -> Path:
    import make_scale_corpus as G

    monkeypatch.setattr(G, "CHUNK_BYTES", 1 << 20)   # several chunks per format even at a few MB
    out = tmp / "scale"
    G.generate(mb / 1000, out, workers=2, seed=3, dev_path=_dev_head(tmp, lines), log=lambda *_: None)
    return out


def _clean(inputs_yaml: Path, out: Path, workers: int, *sets: str) -> dict:
    cfg = load_config(inputs_yaml, [f"corpus.out_dir={out}", *sets])
    return P.run_clean(cfg, workers=workers, fresh=True)


def test_generated_corpus_is_deduplicated_at_the_planned_rate(tmp_path, monkeypatch):
    out = _generate(tmp_path, 3, monkeypatch)
    import json

    desc = json.loads((out / "scale_corpus.json").read_text())
    assert (out / "kowiki-scale-pages-articles.xml.bz2").is_file() and list((out / "news").glob("*.jsonl"))
    assert desc["coined_words"] > 0 and 2.9e6 < desc["text_bytes"] < 3.1e6
    m = _clean(out / "corpus.yaml", tmp_path / "clean", 2)
    docs_in = sum(s["docs_in"] for s in m["sources"].values())
    assert set(m["sources"]) == {"wiki", "news", "text"}
    assert abs(docs_in - desc["docs"]) <= 2      # every generated page/record/line is a document
    exact, near = m["dedup"]["exact"]["docs"] / docs_in, m["dedup"]["near"]["docs"] / docs_in
    assert 0.035 < exact < 0.065, exact          # planned 5%
    assert 0.018 < near < 0.042, near            # planned 3%, of which MinHash LSH finds ~90-95%
    dropped = sum(v["docs"] for k, v in m["filters"].items() if k in dict(corpus.clean.FILTERS))
    assert dropped / docs_in < 0.03              # the generated documents pass the quality filters


def test_clean_parts_are_identical_for_one_and_two_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.plan, "MIN_UNIT", 1 << 14)   # many units, finishing in varying order
    out = _generate(tmp_path, 1.5, monkeypatch, lines=8000)
    sets = ("corpus.dedup.min_chars=0", "corpus.part_size_mb=1")
    m1 = _clean(out / "corpus.yaml", tmp_path / "c1", 1, *sets)
    m2 = _clean(out / "corpus.yaml", tmp_path / "c2", 2, *sets)
    assert m1["units"] > 8 and m1["dedup"]["near"]["docs"] > 0 and m1["dedup"]["exact"]["docs"] > 0
    assert [p["sha256"] for p in m1["parts"]] == [p["sha256"] for p in m2["parts"]]
    assert m1["dedup"] == m2["dedup"] and m1["filters"] == m2["filters"] and m1["sources"] == m2["sources"]


PROGRESS_CHILD = r"""
import sys, logging
sys.path.insert(0, sys.argv[1])
from common.log import setup_logging
from common.config import load_config
from corpus.pipeline import run_clean
setup_logging()
cfg = load_config(None, [f"corpus.inputs=[{{path: {sys.argv[2]}, format: text}}]", f"corpus.out_dir={sys.argv[3]}"])
run_clean(cfg, workers=1)
"""


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    src = _dev_head(tmp_path, 3000)
    r = subprocess.run([sys.executable, "-c", PROGRESS_CHILD, str(ROOT), str(src), str(tmp_path / "out")],
                       capture_output=True, text=True, env={"KOGPT_PROGRESS_SECONDS": "0", "PATH": ""})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if " clean: " in ln and "MB/s" in ln]
    assert len(lines) >= 3, r.stderr
    assert any("ETA" in ln and "%" in ln and "/" in ln for ln in lines)
    assert "\r" not in r.stderr                   # no tqdm bar redraws in a log file


def test_progress_helper_logs_done_total_rate_eta(caplog):
    from common.progress import Progress

    with caplog.at_level(logging.INFO, logger="progress"):
        with Progress("stage", total=200, unit="docs", interval=0, tty=False) as bar:
            bar.update(50)
        with Progress("train", tty=False, interval=0.05, heartbeat=True, estimate_s=60):
            import time
            time.sleep(0.3)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("stage: 50/200 docs (25.0%)") and "docs/s" in m and "ETA" in m for m in msgs)
    assert msgs[-1].startswith("train: done")
    assert sum(m.startswith("train:") and "ETA ~" in m for m in msgs) >= 2   # heartbeat without updates


def _clean_dev(tmp: Path, monkeypatch, lines: int) -> Path:
    monkeypatch.setattr(corpus.plan, "MIN_UNIT", 1 << 15)   # several parts
    src = _dev_head(tmp, lines)
    cfg = load_config(None, [f"corpus.inputs=[{{path: {src}, format: text}}]", f"corpus.out_dir={tmp}/clean"])
    assert len(P.run_clean(cfg, workers=1)["parts"]) > 3
    return tmp / "clean"


def _sample(clean: Path, tmp: Path, workers: int, *sets: str) -> tuple[bytes, dict]:
    from corpus.sentence_sample import sample_sentences

    cfg = load_config(None, [f"corpus.out_dir={clean}", *sets])
    out = tmp / f"sample-{workers}-{len(sets)}.txt"
    stats = sample_sentences(cfg, out, workers=workers)
    return out.read_bytes(), stats


def test_sampling_is_seeded_worker_independent_and_splits_only_selected_lines(tmp_path, monkeypatch):
    clean = _clean_dev(tmp_path, monkeypatch, 6000)
    cap = ("tokenizer.sample_sentences=1500", "corpus.sentence_splitter=regex")
    one, st1 = _sample(clean, tmp_path, 1, *cap)
    two, st2 = _sample(clean, tmp_path, 2, *cap)
    assert one == two and st1["heldout"] == st2["heldout"]
    assert len(one.splitlines()) == st1["sentences_sampled"] == 1500
    assert 0 < st1["line_probability"] < 1 and st1["lines_selected"] < 0.7 * st1["lines"]
    assert 1500 <= st1["sentences_seen"] < st1["sentences_estimated"]
    other, _ = _sample(clean, tmp_path, 1, *cap, "tokenizer.seed=7")
    assert other != one
    everything, st = _sample(clean, tmp_path, 1, "corpus.sentence_splitter=regex")   # cap above the corpus
    assert st["line_probability"] == 1.0 and st["sentences_seen"] == st["sentences_sampled"]
    assert set(one.splitlines()) <= set(everything.splitlines())


def test_kiwi_splits_only_pieces_longer_than_the_limit(tmp_path, monkeypatch):
    pytest.importorskip("kiwipiepy")
    clean = _clean_dev(tmp_path, monkeypatch, 1500)
    data, st = _sample(clean, tmp_path, 1, "tokenizer.max_sentence_chars=40", "corpus.sentence_splitter=kiwi")
    assert st["kiwi_split"] > 0
    assert all(len(s) <= 40 for s in data.decode("utf-8").splitlines())


TOKENIZER_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from common.log import setup_logging
from common.config import load_config
from corpus.tokenizer import train_tokenizer
setup_logging()
cfg = load_config(None, [f"corpus.out_dir={sys.argv[2]}", f"tokenizer.dir={sys.argv[3]}", "tokenizer.vocab_size=2500",
                         "corpus.sentence_splitter=regex", "tokenizer.threads=1"])
train_tokenizer(cfg)
"""


def test_tokenizer_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    clean = _clean_dev(tmp_path, monkeypatch, 3000)
    r = subprocess.run([sys.executable, "-c", TOKENIZER_CHILD, str(ROOT), str(clean), str(tmp_path / "tok")],
                       capture_output=True, text=True, env={"KOGPT_PROGRESS_SECONDS": "0", "PATH": ""})
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert any("sampling sentences: " in ln and "docs/s" in ln and "ETA" in ln for ln in err.splitlines()), err
    assert any("training 2500-piece BPE" in ln and "elapsed" in ln for ln in err.splitlines()), err
    assert "\r" not in err and (tmp_path / "tok" / "spm.model").is_file()
