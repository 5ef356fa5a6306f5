"""The corpus stage on the Korean corpus formats: NIKL, AI Hub zip, namuwiki, Parquet, nested JSONL.

What reaches the clean documents and the manifest: metadata (title/date), the namuwiki license note,
PII / placeholder / repeat counts per kind, format: auto, and a config error for an AI Hub zip
without json_path.
"""
from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import pytest

import corpus.pipeline as P
from common.config import load_config
from common.errors import ConfigError
from corpus.docs import iter_documents

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _config(d: Path, inputs: str) -> str:
    cfg = d / "c.yaml"
    cfg.write_text(f"""
corpus:
  inputs:
{inputs}
  out_dir: {d}/out
  workers: 1
  part_size_mb: 1
  filters: {{min_chars: 5}}
""", encoding="utf-8")
    return str(cfg)


def test_korean_formats_through_the_stage(tmp_path):
    shutil.copy(FIXTURES / "nikl_newspaper.json", tmp_path / "NXRW2300000001.json")
    shutil.copy(FIXTURES / "namuwiki_dump.json", tmp_path / "namuwiki_sample.json")
    with zipfile.ZipFile(tmp_path / "summary.zip", "w") as z:
        z.writestr("Training/a.json", (FIXTURES / "aihub_summary.json").read_bytes())
    recs = [{"doc": {"body": "웹 문서 본문입니다. 연락처는 010-2222-3333, 메일은 web@example.org 입니다 ㅋㅋㅋㅋㅋ"}}]
    (tmp_path / "web.jsonl.gz").write_bytes(gzip.compress(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()))
    cfg = load_config(_config(tmp_path, f"""
    - {{path: {tmp_path}/NXRW2300000001.json, source: nikl}}
    - {{path: {tmp_path}/namuwiki_sample.json, source: namu}}
    - {{path: {tmp_path}/summary.zip, source: aihub, json_path: "SJML.text[].content"}}
    - {{path: {tmp_path}/web.jsonl.gz, source: web, text_field: doc.body}}"""))
    m = P.run_clean(cfg)
    docs = {d["id"]: d for d in iter_documents(tmp_path / "out")}
    nikl = docs["nikl:NXRW2300000001.json:NXRW2300000001.1"]
    assert nikl["meta"]["title"] == "시립 도서관, 주말 야간 개관 시작" and nikl["meta"]["date"] == "20230105"
    assert "<|tel|>" in nikl["text"]
    namu = docs["namu:namuwiki_sample.json:가상의 섬"]
    assert namu["meta"] == {"title": "가상의 섬"} and "[[" not in namu["text"] and "||" not in namu["text"]
    assert "(이름)" not in docs["aihub:summary.zip/Training/a.json:0"]["text"]
    web = docs["web:web.jsonl.gz:0"]
    assert web["text"] == "웹 문서 본문입니다. 연락처는 <|tel|>, 메일은 <|email|> 입니다 ㅋㅋㅋ" and "meta" not in web
    assert set(m["licenses"]) == {"namu"} and "CC BY-NC-SA" in m["licenses"]["namu"]
    f = m["filters"]
    assert f["pii"]["tel"] == 2 and f["pii"]["email"] == 1 and f["pii"]["rrn"] == 0
    assert f["placeholders"]["docs"] == 1 and f["repeats"]["docs"] == 1
    assert f["namu_redirect"]["docs"] == 1 and f["namu_non_article"]["docs"] == 1
    assert "pii" in P.summary_table(m)


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    d = tmp_path / "hf"
    d.mkdir()
    texts = [f"{i}번째 파케이 문서의 한국어 본문입니다." for i in range(20)]
    pq.write_table(pa.table({"title": [f"제목{i}" for i in range(20)], "text": texts}), d / "train-00000.parquet",
                   row_group_size=4)
    m = P.run_clean(load_config(_config(tmp_path, f"    - {{path: {d}, source: wiki_hf}}")))
    docs = list(iter_documents(tmp_path / "out"))
    assert sorted(x["text"] for x in docs) == sorted(texts) and m["sources"]["wiki_hf"]["docs_out"] == 20
    assert {x["meta"]["title"] for x in docs} == {f"제목{i}" for i in range(20)}


def test_aihub_zip_needs_json_path(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.writestr("a.json", "{}")
    with pytest.raises(ConfigError, match="json_path"):
        P.run_clean(load_config(_config(tmp_path, f"    - {{path: {tmp_path}/x.zip}}")))
    with pytest.raises(ConfigError, match="json_path"):
        load_config(_config(tmp_path, f"    - {{path: {tmp_path}/x.zip, format: aihub}}"))
    with pytest.raises(ConfigError, match="SJML.text\\[\\].content"):
        load_config(_config(tmp_path, f"    - {{path: {tmp_path}/x.zip, json_path: 'a..b'}}"))
    with pytest.raises(ConfigError, match="original_form"):
        load_config(_config(tmp_path, f"    - {{path: {tmp_path}/x.zip, utterance_form: raw}}"))
