"""PII scrubbing, repeat normalization and de-identification placeholders (the per-input cleaning steps)."""
from __future__ import annotations

import json

import pytest

from corpus.input_clean import InputCleaner
from corpus.pii import scrub_pii
from corpus.readers import ErrorLog, Segment, read_segment

PII = [
    ("주민등록번호 900101-1234567 확인", "주민등록번호 <|rrn|> 확인", "rrn"),
    ("외국인 850315-5123456, 가린 번호 010203-4******", "외국인 <|rrn|>, 가린 번호 <|rrn|>", "rrn"),
    ("휴대폰 010-1234-5678로 연락", "휴대폰 <|tel|>로 연락", "tel"),
    ("번호는01098765432입니다", "번호는<|tel|>입니다", "tel"),
    ("대표 02-123-4567, 지사 (031) 765-4321", "대표 <|tel|>, 지사 <|tel|>", "tel"),
    ("해외에서는 +82 10-2345-6789", "해외에서는 <|tel|>", "tel"),
    ("메일은 hong.gildong+news@example.co.kr 으로", "메일은 <|email|> 으로", "email"),
    ("입금 계좌: 신한 110-123-456789", "입금 계좌: 신한 <|acc|>", "acc"),
    ("국민은행 123456-01-123456 예금주 홍길동", "국민은행 <|acc|> 예금주 홍길동", "acc"),
    ("카드 4111-1111-1111-1111 결제", "카드 <|card|> 결제", "card"),
    ("접속 IP 203.0.113.45 차단", "접속 IP <|ip|> 차단", "ip"),
]

# numbers that are not personal data: they must come through unchanged
NOT_PII = [
    "2024-01-15에 열린 회의, 2024.01.15 기준, 2024/1/15",
    "가격은 1,234,000원이고 할인가는 99,000원이다. 총 12345678901원.",
    "고객센터 1588-1234, 1644-0000으로 문의",
    "1990년부터 2020년까지 30년 동안 3.14배 성장했다.",
    "제1.2.3조와 버전 1.2.3.4, 좌표 37.5665, 126.9780",
    "ISBN 978-89-123-4567-8, 전화 통계 12-34-56",
    "카드 4111-1111-1111-1112 (체크 숫자가 틀림)",
    "은행 총자산 1234567890000원, 계좌 수 1234567",
    "생일 900101 모임, 인구 9,400,000명, 우편번호 04524",
    "오늘 기온은 -12도, 점수는 010점이 아니라 10점",
    "이메일 없음 @멘션 a@b 가나@다라",
]


@pytest.mark.parametrize("text,want,kind", PII)
def test_pii_is_replaced(text, want, kind):
    out, found = scrub_pii(text)
    assert out == want
    assert set(found) == {kind}


@pytest.mark.parametrize("text", NOT_PII)
def test_no_false_positives_on_dates_prices_and_numbers(text):
    assert scrub_pii(text) == (text, {})


def test_repeats_and_placeholders():
    c = InputCleaner(pii=False, repeats=True, placeholders=True)
    counts: dict = {}
    assert c.apply("ㅋㅋㅋㅋㅋ 진짜 웃겨ㅠㅠㅠㅠ!!!!!! 뭐야????", counts) == "ㅋㅋㅋ 진짜 웃겨ㅠㅠ!!! 뭐야???"
    assert c.apply("ㅋㅋㅋ 그대로ㅠㅠ!!! 하하하하", counts) == "ㅋㅋㅋ 그대로ㅠㅠ!!! 하하하하"
    assert c.apply("(이름)님이 #@주소# 에서 &name1& 만남", counts) == "님이  에서  만남"
    assert counts["repeats"]["docs"] == 1 and counts["placeholders"]["docs"] == 1
    assert counts["repeats"]["bytes"] == 2 * 3 + 2 * 3 + 3 + 1


def test_defaults_follow_the_format():
    seg = Segment("x", "s")
    on = {f: InputCleaner.for_input(seg, f) for f in ("text", "jsonl", "wiki", "namuwiki", "aihub", "nikl", "parquet")}
    assert on["wiki"] is None and on["namuwiki"] is None
    assert all(on[f].pii and on[f].repeats for f in ("text", "jsonl", "aihub", "nikl", "parquet"))
    assert on["aihub"].placeholders and on["nikl"].placeholders and not on["jsonl"].placeholders
    off = InputCleaner.for_input(Segment("x", "s", pii=False, normalize_repeats=False), "jsonl")
    assert off is None
    wiki_on = InputCleaner.for_input(Segment("x", "s", pii=True), "wiki")
    assert wiki_on.pii and not wiki_on.repeats


def test_reader_scrubs_news_and_counts_per_kind(tmp_path):
    p = tmp_path / "news.jsonl"
    recs = [{"text": "문의 010-1234-5678, hong@example.com ㅋㅋㅋㅋㅋ"}, {"text": "2024-01-15 가격 1,000원"},
            {"text": "서버 10.0.0.1 와 010-9999-8888"}]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    counts: dict = {}
    docs = list(read_segment(Segment(str(p), "news"), ErrorLog(), lambda n: None, 1 << 20, counts))
    assert [t for t, _ in docs] == ["문의 <|tel|>, <|email|> ㅋㅋㅋ", "2024-01-15 가격 1,000원", "서버 <|ip|> 와 <|tel|>"]
    assert counts["pii"] == {"docs": 2, "bytes": len("010-1234-5678hong@example.com10.0.0.1010-9999-8888"),
                             "rrn": 0, "tel": 2, "email": 1, "acc": 0, "card": 0, "ip": 1}
    counts = {}
    docs = list(read_segment(Segment(str(p), "news", pii=False), ErrorLog(), lambda n: None, 1 << 20, counts))
    assert "010-1234-5678" in docs[0][0] and "pii" not in counts
