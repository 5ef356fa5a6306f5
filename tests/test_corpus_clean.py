"""Normalization and each document filter of corpus/clean.py."""
from __future__ import annotations

import unicodedata

import pytest

from common.schema import FilterConfig
from corpus.clean import FILTERS, Cleaner


def clean(texts, **kw):
    return Cleaner(FilterConfig(**kw)).clean_batch(texts)


def test_normalize_unicode_whitespace_controls_entities():
    c = Cleaner(FilterConfig())
    decomposed = unicodedata.normalize("NFD", "한국어")
    assert decomposed != "한국어"
    assert c.normalize(decomposed + " 문장") == "한국어 문장"
    assert c.normalize("  앞\u200b뒤\ufeff \t\u00a0\u3000사이  \r\n\r\n\n  둘째\x07 줄\u2028셋째  ") == "앞뒤 사이\n둘째 줄\n셋째"
    assert c.normalize("R&amp;D &lt;b&gt; &#44032;") == "R&D <b> 가"
    assert c.normalize("ㅋ" * 30) == "ㅋ" * 10    # max_char_repeat
    assert Cleaner(FilterConfig(max_char_repeat=0)).normalize("ㅋ" * 30) == "ㅋ" * 30


def test_boilerplate_lines():
    doc = ("(서울=연합뉴스) 본문 첫 문장입니다.\n홍길동 기자 hong@yna.co.kr\n본문 둘째 문장입니다.\n"
           "<저작권자(c) 연합뉴스, 무단 전재-재배포 금지>\n▶ 관련기사 보기\nⓒ 한국일보\nCopyright 2019 Herald")
    c = Cleaner(FilterConfig())
    assert c.normalize(doc) == "본문 첫 문장입니다.\n본문 둘째 문장입니다."
    off = Cleaner(FilterConfig(drop_boilerplate_lines=False, boilerplate_patterns=[r"^▶"]))
    assert "▶" not in off.normalize(doc) and "hong@" in off.normalize(doc) and "(서울=연합뉴스)" in off.normalize(doc)
    with pytest.raises(ValueError, match="boilerplate_patterns"):
        Cleaner(FilterConfig(boilerplate_patterns=["(unclosed"]))


@pytest.mark.parametrize("text,want", [
    ("(서울=연합뉴스) 홍길동 기자 = 정부가 발표했다.", "정부가 발표했다."),
    ("[세종=뉴시스]홍길동 기자 = 기획재정부는", "기획재정부는"),
    ("【워싱턴=뉴시스】 김철수 특파원 = 미국은", "미국은"),
    ("(서울=뉴스1) 이영희 박민수 기자 = 서울시는", "서울시는"),
    ("(서울=연합뉴스) 정부는 어제", "정부는 어제"),
    ("제목 줄\n(부산=연합뉴스) 김민수 기자 = 부산시는", "제목 줄\n부산시는"),
    ("(x=3) 일 때 값은", "(x=3) 일 때 값은"),                       # not a place name
    ("그는 (서울=연합뉴스) 보도를 인용했다", "그는 (서울=연합뉴스) 보도를 인용했다"),  # not at a line start
    ("(서울=연합뉴스) 정부 기자회견 = 오늘", "정부 기자회견 = 오늘"),    # only name + 기자 + "=" is a reporter
])
def test_news_datelines_are_cut_from_line_starts(text, want):
    cleaned, keep, _, counts = Cleaner(FilterConfig(min_chars=1)).clean_batch([text, "다른 문서"])
    assert cleaned[0] == want
    assert counts["dateline"] == ({"docs": 1, "bytes": len(text.encode()) - len(want.encode())} if want != text
                                  else {"docs": 0, "bytes": 0})


GOOD = "한국어로 쓰인 충분히 긴 정상적인 문서입니다. 필터를 모두 통과해야 합니다."


@pytest.mark.parametrize("name,bad,kw", [
    ("min_chars", "짧은 글", {}),
    ("max_chars", "가" * 5 + " 나다라" * 40, {"max_chars": 100}),
    ("hangul_ratio", "This document is written in English and has no Korean at all, so it fails.", {}),
    ("symbol_ratio", "한국어 문장입니다 정말 그래요 !?!?!?!?!?!?!?", {}),
    ("digit_ratio", "한국어 문장입니다 정말 그래요 1234567890 1234", {}),
    ("dup_lines", "같은 줄이 반복됩니다\n같은 줄이 반복됩니다\n같은 줄이 반복됩니다\n다른 줄입니다", {}),
])
def test_each_filter_drops_and_counts(name, bad, kw):
    cleaned, keep, stats, counts = clean([GOOD, bad], **kw)
    assert keep.tolist() == [True, False]
    assert counts[name] == {"docs": 1, "bytes": len(cleaned[1].encode())}
    assert all(v["docs"] == 0 for k, v in counts.items() if k != name and k in dict(FILTERS))


def test_batch_stats_and_empty_documents():
    cleaned, keep, st, counts = clean(["", "   \n ", GOOD, "가1!a "])
    assert cleaned[:2] == ["", ""] and keep.tolist() == [False, False, True, False]
    assert st.chars[3] == 4 and st.hangul[3] == 1 and st.digit[3] == 1 and st.symbol[3] == 1
    assert st.bytes[2] == len(GOOD.encode())
    assert counts["min_chars"]["docs"] == 3
