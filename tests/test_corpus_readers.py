"""Readers: each format and compression on tiny fixtures, encodings, byte ranges, bad input."""
from __future__ import annotations

import bz2
import gzip
import json
import zipfile
from pathlib import Path

import pytest
import zstandard

from corpus.readers import ErrorLog, Segment, detect_encoding, detect_format, read_segment, wiki_to_text

FIXTURES = Path(__file__).resolve().parent / "fixtures"

MAX_LINE = 1 << 20


def read(path, meta=None, **kw):
    errors = ErrorLog()
    counts: dict = {}
    max_line = kw.pop("max_line", MAX_LINE)
    seg = Segment(str(path), source=kw.pop("source", "s"), **kw)
    docs = list(read_segment(seg, errors, lambda n: None, max_line, counts, meta))
    return docs, errors, counts


def test_text_lines_and_blank_blocks(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("첫째 문서\n둘째 문서\n\n셋째\n", encoding="utf-8")
    docs, errors, _ = read(p, format="text")
    assert [t for t, _ in docs] == ["첫째 문서", "둘째 문서", "", "셋째"]
    assert docs[1][1] == "s:a.txt:" + str(len("첫째 문서\n".encode()))
    p.write_text("문단 하나\n이어지는 줄\n\n\n문단 둘\n", encoding="utf-8")
    docs, _, _ = read(p, format="text", doc_sep="blank")
    assert [t for t, _ in docs] == ["문단 하나\n이어지는 줄", "문단 둘"]
    assert not errors.entries


@pytest.mark.parametrize("comp", ["", "gz", "bz2", "zst"])
def test_jsonl_compressed(tmp_path, comp):
    lines = [json.dumps({"id": i, "body": f"기사 {i}"}, ensure_ascii=False) for i in range(5)]
    data = ("\n".join(lines) + "\n").encode()
    p = tmp_path / ("n.jsonl" + (f".{comp}" if comp else ""))
    p.write_bytes({"": lambda b: b, "gz": gzip.compress, "bz2": bz2.compress,
                   "zst": zstandard.ZstdCompressor().compress}[comp](data))
    docs, errors, _ = read(p, format="auto", text_field="body")
    assert [t for t, _ in docs] == [f"기사 {i}" for i in range(5)]
    assert not errors.entries


def test_jsonl_bad_records(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text('{"text": "좋은 줄"}\n{broken\n{"title": "no text"}\n[1, 2]\n', encoding="utf-8")
    docs, errors, _ = read(p, format="jsonl")
    assert [t for t, _ in docs] == ["좋은 줄"]
    assert errors.counts == {"json": 1, "json_field": 2}
    assert {e["line"] for e in errors.entries} == {2, 3, 4}


def test_legacy_encoding_detected_and_configured(tmp_path):
    text = "한국어 레거시 인코딩으로 저장된 문서입니다.\n두 번째 줄도 한글로 씁니다.\n" * 20
    p = tmp_path / "old.txt"
    p.write_bytes(text.replace("\n", "\r\n").encode("cp949"))
    assert detect_encoding(p.read_bytes()) == "cp949"
    docs, errors, _ = read(p, format="text", encoding="auto")
    assert docs[0][0].rstrip("\r") == "한국어 레거시 인코딩으로 저장된 문서입니다."
    assert not errors.entries
    docs2, _, _ = read(p, format="text", encoding="euc-kr")
    assert [t for t, _ in docs2] == [t for t, _ in docs]


WIKI = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="ko">
  <siteinfo><sitename>위키백과</sitename></siteinfo>
  <page><title>서울</title><ns>0</ns><id>7</id><revision><id>1</id><text xml:space="preserve">{{도시 정보|이름=서울}}
'''서울특별시'''는 [[대한민국]]의 [[수도 (도시)|수도]]이다.&lt;ref&gt;출처 문헌&lt;/ref&gt;
[[파일:Seoul.jpg|섬네일|서울 사진]]
{| class="wikitable"
|-
| 표 내용 || 숫자
|}
== 역사 ==
조선의 수도였다.&lt;!-- 주석 --&gt;
== 각주 ==
* 참고 링크
[[분류:대한민국의 도시]]
[[en:Seoul]]</text></revision></page>
  <page><title>서울시</title><ns>0</ns><id>8</id><redirect title="서울" /><revision><id>2</id><text>#넘겨주기 [[서울]]</text></revision></page>
  <page><title>틀:도시 정보</title><ns>10</ns><id>9</id><revision><id>3</id><text>틀 내용</text></revision></page>
</mediawiki>
"""


def test_wiki_dump_bz2(tmp_path):
    p = tmp_path / "kowiki-pages-articles.xml.bz2"
    p.write_bytes(bz2.compress(WIKI.encode()))
    docs, errors, counts = read(p, format="auto", source="wiki")
    assert len(docs) == 1 and docs[0][1] == "wiki:kowiki-pages-articles.xml.bz2:7"
    text = docs[0][0]
    assert "서울특별시는 대한민국의 수도이다." in text and "조선의 수도였다." in text and "역사" in text
    for junk in ("도시 정보", "출처 문헌", "섬네일", "표 내용", "주석", "참고 링크", "분류", "Seoul", "각주", "'''"):
        assert junk not in text, junk
    assert counts["wiki_redirect"]["docs"] == 1 and counts["wiki_non_article"]["docs"] == 1
    assert not errors.entries


def test_wiki_to_text_keeps_link_text():
    assert wiki_to_text("[[서울|수도 서울]]과 [http://x.org 외부] 링크 &amp; 끝").strip() == "수도 서울과 외부 링크 & 끝"


def test_wiki_text_templates_errors_and_odd_links():
    src = ("서울({{lang|en|Seoul}}, {{llang|ja|ソウル}}, {{lang-zh|漢城}}, {{음역|ja|東京|도쿄}})은 {{convert|605|km2}}의 "
           "도시이다.{{각주 필요}}{{도시 정보|이름=서울}}\n"
           "한강이 흐른다.인용 오류: <ref> 태그가 잘못되었습니다; 이름이 없는 주석\n"
           "Cite error: The named reference was invoked but never defined\n"
           "[[a<b|보이는 글]]과 [[x>y]]와 [[파일:a<b.jpg]] 끝")
    text = wiki_to_text(src)
    assert text.split("\n") == ["서울(Seoul, ソウル, 漢城, 도쿄)은 605 km2의 도시이다.", "한강이 흐른다.", "",
                                 "보이는 글과 x>y와  끝"]
    assert wiki_to_text("길이 {{convert|5|-|10|km|mi}}, 높이 {{convert|1,950|m|ft|abbr=on}}") == "길이 5 - 10 km, 높이 1,950 m"


@pytest.mark.parametrize("doc_sep", ["line", "blank"])
def test_byte_ranges_cover_every_document_once(tmp_path, doc_sep):
    sep = "\n" if doc_sep == "line" else "\n\n"
    docs = [f"문서 {i} " + "가나다" * (i % 7) + ("\n둘째 줄" if doc_sep == "blank" and i % 3 == 0 else "")
            for i in range(120)]
    p = tmp_path / "r.txt"
    p.write_text(sep.join(docs) + "\n", encoding="utf-8")
    size = p.stat().st_size
    for step in (1, 13, 200):
        got = []
        for start in range(0, size, step):
            got += [t for t, _ in read(p, format="text", doc_sep=doc_sep, start=start, end=min(size, start + step))[0]]
        assert got == docs, step


def test_stride_shares_partition_the_file(tmp_path):
    p = tmp_path / "s.txt.gz"
    p.write_bytes(gzip.compress("\n".join(f"줄 {i}" for i in range(50)).encode()))
    got = []
    for r in range(3):
        got += [t for t, _ in read(p, format="text", stride=(3, r))[0]]
    assert sorted(got) == sorted(f"줄 {i}" for i in range(50))


def test_bad_input_is_recorded_not_raised(tmp_path):
    # invalid UTF-8 and NUL bytes: only the bad bytes go, the line stays; line and byte offset reported
    p = tmp_path / "bad.txt"
    p.write_bytes("정상 줄\n".encode() + b"\xff\xfe broken \xed\xa0\x80\n" + "널\x00문자\n".encode() + "마지막\n".encode())
    docs, errors, _ = read(p, format="text", encoding="utf-8")
    assert [t for t, _ in docs] == ["정상 줄", " broken ", "널문자", "마지막"]
    assert errors.counts == {"decode": 1, "nul_bytes": 1}
    first = len("정상 줄\n".encode())
    assert errors.entries[0]["line"] == 2 and errors.entries[0]["offset"] == first
    assert "5 invalid utf-8 byte(s)" in errors.entries[0]["error"]
    assert errors.entries[1]["line"] == 3 and errors.entries[1]["offset"] == first + 14 + len("널".encode())
    # a line longer than the limit is streamed past
    p2 = tmp_path / "long.txt"
    p2.write_bytes(b"first\n" + b"x" * 3_000_000 + b"\nlast\n")
    docs, errors, _ = read(p2, format="text", max_line=1 << 20)
    assert [t for t, _ in docs] == ["first", "last"]
    assert errors.counts == {"line_too_long": 1} and errors.entries[0]["offset"] == 6
    # corrupt bz2 stream: documents before the damage are kept, the error has an offset
    good = bz2.compress(("\n".join(f"문서 {i}" for i in range(20000)) + "\n").encode())
    p3 = tmp_path / "c.txt.bz2"
    p3.write_bytes(good[: len(good) // 2] + b"garbage" * 100)
    docs, errors, _ = read(p3, format="text")
    assert errors.counts == {"stream": 1} and "offset" in errors.entries[0]
    # empty and missing files
    (tmp_path / "empty.txt").write_bytes(b"")
    docs, errors, _ = read(tmp_path / "empty.txt", format="text")
    assert docs == [] and errors.counts == {"empty": 1}
    docs, errors, _ = read(tmp_path / "nope.txt", format="text")
    assert docs == [] and errors.counts == {"missing": 1}


@pytest.mark.parametrize("comp", ["gz", "zst"])
def test_jsonl_nested_text_field(tmp_path, comp):
    recs = [{"meta": {"id": i}, "body": {"content": f"본문 {i}"}} for i in range(3)] + [{"body": "평문"}]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
    p = tmp_path / f"n.jsonl.{comp}"
    p.write_bytes(gzip.compress(data) if comp == "gz" else zstandard.ZstdCompressor().compress(data))
    docs, errors, _ = read(p, text_field="body.content")
    assert [t for t, _ in docs] == ["본문 0", "본문 1", "본문 2"]
    assert errors.counts == {"json_field": 1} and errors.entries[0]["line"] == 4


def test_format_auto_detection():
    nikl = (FIXTURES / "nikl_newspaper.json").read_bytes()
    namu = (FIXTURES / "namuwiki_dump.json").read_bytes()
    assert detect_format("NXRW2300000001.json", nikl) == "nikl"
    assert detect_format("MXRW.json", (FIXTURES / "nikl_messenger.json").read_bytes()) == "nikl"
    assert detect_format("namuwiki_20210301.json", namu) == "namuwiki"
    assert detect_format("x.zip", b"PK\x03\x04....") == "aihub"
    assert detect_format("train-00000.parquet", b"PAR1....") == "parquet"
    assert detect_format("data-00000-of-00001.arrow", b"\xff\xff\xff\xff") == "parquet"
    assert detect_format("news.json", b'{"text": "document"}\n') == "jsonl"
    assert detect_format("a.json", (FIXTURES / "aihub_summary.json").read_bytes()) == "jsonl"  # aihub: say so
    assert detect_format("a.txt", b"plain text\n") == "text"


def test_nikl_written_layout_keeps_title_and_date(tmp_path):
    meta: dict = {}
    docs, errors, counts = read(FIXTURES / "nikl_newspaper.json", meta=meta, source="nikl")
    assert [d for _, d in docs] == ["nikl:nikl_newspaper.json:NXRW2300000001.1",
                                    "nikl:nikl_newspaper.json:NXRW2300000001.2"]
    assert docs[0][0] == ("시립 도서관이 이번 달부터 주말에도 밤 아홉 시까지 문을 연다.\n"
                          "도서관 측은 직장인 이용자의 요청이 많았다고 설명했다. 문의는 <|tel|>로 하면 된다.")
    assert meta[docs[0][1]] == {"title": "시립 도서관, 주말 야간 개관 시작", "date": "20230105", "author": "김기자",
                                "publisher": "가상일보", "topic": "사회"}
    assert counts["pii"]["tel"] == 1
    # the empty document is reported with its id, the rest read
    assert errors.counts == {"nikl_record": 1} and "NXRW2300000001.3" in errors.entries[0]["error"]


def test_nikl_spoken_layout_merges_speakers(tmp_path):
    docs, errors, counts = read(FIXTURES / "nikl_messenger.json", format="nikl")
    assert docs[0][0] == "주말에 뭐 해? 랑 영화 볼까 생각 중이야\n좋다 나도 끼워 줘 ㅋㅋㅋ\n그래 같이 가자"
    assert counts["placeholders"]["docs"] == 1 and counts["repeats"]["docs"] == 1
    docs, _, _ = read(FIXTURES / "nikl_messenger.json", format="nikl", utterance_form="original_form",
                      drop_placeholders=False, normalize_repeats=False)
    assert docs[0][0] == "주말에 머해?? &name2&랑 영화볼까 생각중\n조타 나도 껴줘 ㅋㅋㅋㅋㅋㅋ\n그래 같이 가자~~"
    assert not errors.entries


def test_nikl_streams_and_reports_a_damaged_file(tmp_path):
    doc = {"id": "D.{}", "metadata": {"title": "t"}, "paragraph": [{"id": "p", "form": "문단 {}"}]}
    body = ",".join(json.dumps(doc, ensure_ascii=False).replace("{}", str(i)) for i in range(2000))
    data = ('{"id": "D", "metadata": {}, "document": [' + body + "]}").encode()
    p = tmp_path / "D.json.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(data[: len(data) * 3 // 4]))   # cut short
    docs, errors, _ = read(p, format="auto")
    assert 1450 < len(docs) < 1550 and docs[7][0] == "문단 7"
    assert errors.counts == {"json": 1} and "offset" in errors.entries[0]
    got = []
    for r in range(3):
        got += [d for _, d in read(p, stride=(3, r))[0]]
    assert sorted(got) == sorted(d for _, d in docs)


def test_aihub_zip_members_and_bad_ones(tmp_path):
    good = (FIXTURES / "aihub_summary.json").read_bytes()
    p = tmp_path / "017.문서요약.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Training/a.json", good)
        z.writestr("Training/b.json", b"\xef\xbb\xbf" + good)          # with a UTF-8 BOM
        z.writestr("Training/broken.json", good[:100])
        z.writestr("Training/other.json", b'{"rows": []}')
        z.writestr("Training/readme.txt", "설명")
        z.writestr("Training/inner.zip", b"PK\x03\x04")
    docs, errors, counts = read(p, json_path="SJML.text[].content", source="aihub")
    texts = [t for t, _ in docs]
    assert texts == [" 씨는 오늘 지역 축제에 참석했다고 밝혔다. 축제는 사흘 동안 열린다.",
                     "시는 새 공원을 만들 계획이다. 공원에는 산책로와 작은 연못이 생긴다."] * 2
    assert docs[0][1] == "aihub:017.문서요약.zip/Training/a.json:0"
    assert counts["placeholders"] == {"docs": 2, "bytes": 2 * len("(이름)".encode())}
    assert errors.counts == {"json": 1, "aihub_path": 1, "aihub_member": 1}
    assert {e["error"].split(":")[0] for e in errors.entries} == {"Training/broken.json", "Training/other.json",
                                                                  "Training/inner.zip"}
    shares = [[t for t, _ in read(p, json_path="SJML.text[].content", stride=(2, r))[0]] for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(texts) and shares[0] and shares[1]


def test_namuwiki_dump(tmp_path):
    p = tmp_path / "namuwiki.json.bz2"
    p.write_bytes(bz2.compress((FIXTURES / "namuwiki_dump.json").read_bytes()))
    meta: dict = {}
    docs, errors, counts = read(p, meta=meta, source="namu")
    assert [d for _, d in docs] == ["namu:namuwiki.json.bz2:가상의 섬", "namu:namuwiki.json.bz2:숫자 문서"]
    assert docs[0][0] == ("개요\n가상의 섬은 서해에 있다고 설정된 작은 섬이다.\n역사\n옛날에는 등대만 있었다.\n"
                          "지금은  작은 마을이 있다.")
    assert docs[1][0] == "이 문서는 1990년부터 10년 동안의 일을 다룬다."
    assert meta[docs[0][1]] == {"title": "가상의 섬"}
    assert counts["namu_redirect"]["docs"] == 1 and counts["namu_non_article"]["docs"] == 1
    assert "pii" not in counts and not errors.entries


def test_parquet_and_arrow_by_row_group(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f"파케이 문서 {i}" for i in range(10)]
    table = pa.table({"id": list(range(10)), "title": [f"제목 {i}" for i in range(10)], "text": texts,
                      "nested": [{"body": t} for t in texts]})
    p = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, p, row_group_size=3)
    meta: dict = {}
    docs, errors, _ = read(p, meta=meta, source="hf")
    assert [t for t, _ in docs] == texts and docs[4][1] == "hf:train-00000-of-00001.parquet:1:1"
    assert meta[docs[4][1]] == {"title": "제목 4"} and not errors.entries
    assert [t for t, _ in read(p, text_field="nested.body")[0]] == texts
    shares = [[t for t, _ in read(p, stride=(2, r))[0]] for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(texts) and len(shares[0]) == 6
    docs, errors, _ = read(p, text_field="body")
    assert docs == [] and errors.counts == {"parquet_field": 1} and "id, title, text" in errors.entries[0]["error"]
    # Arrow IPC stream (what datasets.save_to_disk writes), with a null value
    a = tmp_path / "data-00000-of-00001.arrow"
    t2 = pa.table({"text": ["하나", None, "셋"]})
    with pa.OSFile(str(a), "wb") as f, pa.ipc.new_stream(f, t2.schema) as w:
        w.write_table(t2)
    docs, errors, _ = read(a)
    assert [t for t, _ in docs] == ["하나", "셋"] and errors.counts == {"parquet_value": 1}
