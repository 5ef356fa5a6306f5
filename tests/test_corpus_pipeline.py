"""The corpus stage end to end: manifest contents, bad inputs, resume after a kill, workers, CLI."""
from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import corpus.pipeline as P
import corpus.plan
from common.config import load_config
from common.io import sha256_file
from corpus.docs import iter_documents, read_manifest

ROOT = Path(__file__).resolve().parents[1]
NEWS = [
    "(서울=연합뉴스) 정부가 오늘 새로운 경제 정책을 발표했다. 이번 정책은 중소기업 지원을 강화하는 내용을 담고 있다.\n"
    "전문가들은 이번 조치가 고용 증가에 도움이 될 것으로 내다봤다.\n홍길동 기자 hong@yna.co.kr\n"
    "<저작권자(c) 연합뉴스, 무단 전재-재배포 금지>",
    "서울 지역에 오늘 오후부터 많은 비가 내릴 예정이다. 기상청은 시민들에게 우산을 챙길 것을 당부했다. "
    "주말에는 맑은 날씨가 이어질 전망이다.",
]


def write_inputs(d: Path) -> str:
    wiki = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<page><title>서울</title><ns>0</ns><id>1</id><revision><text>'''서울'''은 [[대한민국]]의 수도이며 가장 큰 도시이다. 한강이 도시를 가로질러 흐른다.{{각주}}</text></revision></page>
<page><title>넘김</title><ns>0</ns><id>2</id><redirect title="서울"/><revision><text>#REDIRECT [[서울]]</text></revision></page>
</mediawiki>"""
    (d / "wiki.xml.bz2").write_bytes(bz2.compress(wiki.encode()))
    recs = [{"id": i, "text": t} for i, t in enumerate(NEWS + [NEWS[1]])]   # an exact duplicate
    recs.append({"id": 9, "text": NEWS[1] + " 이상."})                        # a near duplicate
    lines = [json.dumps(r, ensure_ascii=False) for r in recs] + ["{not json"]
    (d / "news.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "talk.txt").write_text("오늘 뭐 했어?\n그냥 집에서 쉬었어. 너는 어땠는지 궁금하다.\n\n\n짧아\n\n"
                                "주말에 영화 보러 갈래? 요즘 재미있는 한국 영화가 많이 개봉했대.\n", encoding="utf-8")
    (d / "old.txt").write_bytes(("옛날 인코딩으로 저장된 한국어 문서입니다. 이 줄은 충분히 길어서 남습니다.\r\n" * 1
                                 + "두 번째 문서도 역시 씨피구사구 인코딩으로 저장되어 있습니다.\r\n").encode("cp949"))
    (d / "bad.txt").write_bytes("정상적인 한국어 문장이 여기 하나 있습니다. 충분히 깁니다.\n".encode()
                                + b"\xff\xfe\xfd broken bytes\n" + "널 문자가\x00 들어간 한국어 문장도 있습니다 정말로.\n".encode())
    (d / "empty.txt").write_bytes(b"")
    cfg = d / "c.yaml"
    cfg.write_text(f"""
corpus:
  inputs:
    - {{path: {d}/wiki.xml.bz2, source: wiki}}
    - {{path: {d}/news.jsonl, source: news}}
    - {{path: {d}/talk.txt, format: text, doc_sep: blank, source: talk}}
    - {{path: {d}/old.txt, source: legacy, encoding: auto}}
    - {{path: {d}/bad.txt, source: bad, encoding: utf-8}}
    - {{path: {d}/empty.txt, source: bad}}
    - {{path: {d}/missing.txt, source: bad}}
  out_dir: {d}/out
  workers: 1
  part_size_mb: 1
""", encoding="utf-8")
    return str(cfg)


def test_stage_manifest_and_documents(tmp_path):
    cfg = load_config(write_inputs(tmp_path))
    m = P.run_clean(cfg)
    out = tmp_path / "out"
    assert m == read_manifest(out) and m["format"] == "kogpt-clean-v1"
    assert (out / "config.yaml").is_file() and m["config"]["out_dir"] == str(out)
    docs = list(iter_documents(out))
    assert len(docs) == m["docs"] == sum(p["docs"] for p in m["parts"]) > 0
    for p in m["parts"]:
        assert sha256_file(out / p["file"]) == p["sha256"]
    texts = [d["text"] for d in docs]
    assert {d["source"] for d in docs} == {"wiki", "news", "talk", "legacy", "bad"}
    assert len({d["id"] for d in docs}) == len(docs)
    assert any(t.startswith("서울은 대한민국의 수도") for t in texts)
    assert not any("hong@" in t or "무단" in t or "{{" in t or "\x00" in t for t in texts)
    assert "옛날 인코딩으로 저장된 한국어 문서입니다. 이 줄은 충분히 길어서 남습니다." in texts
    assert "널 문자가 들어간 한국어 문장도 있습니다 정말로." in texts
    assert m["sources"]["news"]["docs_in"] == 4 and m["sources"]["news"]["docs_out"] == 2
    assert m["sources"]["wiki"] == {"docs_in": 1, "bytes_in": m["sources"]["wiki"]["bytes_in"], "docs_out": 1,
                                    "bytes_out": m["sources"]["wiki"]["bytes_out"]}
    assert m["dedup"]["exact"]["docs"] == 1 and m["dedup"]["near"]["docs"] == 1
    assert m["filters"]["wiki_redirect"]["docs"] == 1 and m["filters"]["min_chars"]["docs"] >= 1
    assert m["filters"]["boilerplate_lines"]["docs"] == 1
    assert set(m["error_counts"]) == {"json", "decode", "nul_bytes", "empty", "missing"}
    by_kind = {e["kind"]: e for e in m["errors"]}
    assert by_kind["decode"]["file"] == "bad.txt" and by_kind["decode"]["line"] == 2
    assert by_kind["json"]["line"] == 5 and by_kind["missing"]["file"].endswith("missing.txt")
    assert "summary" not in m and "dedup_near" in P.summary_table(m)
    # a rerun with the same config finds the work done
    assert P.run_clean(cfg) == m


KILLER = r"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import corpus.pipeline as P
import corpus.plan
from common.config import load_config
corpus.plan.MIN_UNIT = 200
marker = Path(sys.argv[3])
units = []
finish, write_lines = P.finish_unit, P.PartWriter.write_lines
def finish_unit(rec1, *args, **kw):
    units.append(rec1["unit"])
    return finish(rec1, *args, **kw)
def slow_write_lines(self, *args, **kw):
    write_lines(self, *args, **kw)
    if len(units) == 3:                  # the 3rd unit's final part is being written: hold still here
        marker.write_text(str(units[-1]))
        time.sleep(600)
P.finish_unit, P.PartWriter.write_lines = finish_unit, slow_write_lines
P.run_clean(load_config(sys.argv[2]), workers=1)
"""


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_output(tmp_path, monkeypatch):
    """SIGKILL from outside while the 3rd unit writes its final part (the part half written under its
    temporary name, the unit not recorded): the rerun redoes that unit and the output is identical."""
    import signal
    import time
    monkeypatch.setattr(corpus.plan, "MIN_UNIT", 200)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    ref = P.run_clean(load_config(write_inputs(ref_dir)))
    cfg_path = write_inputs(run_dir)
    marker = tmp_path / "inside-unit-3"
    p = subprocess.Popen([sys.executable, "-c", KILLER, str(ROOT), cfg_path, str(marker)], stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not marker.exists():
            time.sleep(0.02)
        assert marker.exists(), p.stderr.read() if p.poll() is not None else "the 3rd unit never started"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    out = run_dir / "out"
    assert not (out / "manifest.json").exists() and len(list((out / ".progress").glob("unit-*.json"))) == 2
    assert list((out / ".progress").glob(f".unit-{int(marker.read_text()):05d}.*.tmp"))   # the part in progress
    assert ref["units"] > 3
    m = P.run_clean(load_config(cfg_path))
    assert [p["sha256"] for p in m["parts"]] == [p["sha256"] for p in ref["parts"]]
    assert m["filters"] == ref["filters"] and m["dedup"]["exact"] == ref["dedup"]["exact"]
    assert not list((out / ".progress").glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_parallel_workers_via_cli(tmp_path):
    cfg_path = write_inputs(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "corpus", "clean", "--config", cfg_path, "--workers", "2",
                        "--set", "corpus.dedup.threshold=0.7"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert "dedup_near" in r.stderr and "bad input" in r.stderr
    m = read_manifest(tmp_path / "out")
    assert m["config"]["dedup"]["threshold"] == 0.7 and m["dedup"]["exact"]["docs"] == 1
    r = subprocess.run([sys.executable, "-m", "corpus", "nosuch"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 2 and "clean" in r.stderr


SAMPLES = ROOT / "samples" / "corpus"


@pytest.mark.skipif(not (SAMPLES / "news.jsonl").is_file(), reason="samples/corpus not built")
def test_sample_corpus(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"corpus.out_dir={tmp_path}/clean", "corpus.workers=1"])
    import os as _os
    cwd = _os.getcwd()
    _os.chdir(ROOT)
    try:
        m = P.run_clean(cfg)
    finally:
        _os.chdir(cwd)
    assert m["docs"] > 0 and set(m["sources"]) == {"wiki", "news", "dialogue", "legacy", "messenger"}
    assert all(s["docs_out"] > 0 for s in m["sources"].values())
