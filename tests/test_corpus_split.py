"""Korean sentence splitting (corpus/split.py)."""
from __future__ import annotations

import pytest

from corpus.split import split_sentences

TEXT = '안녕하세요. 오늘 날씨가 좋네요 그래서 산책을 갔어요! "정말?" 그가 물었다. 원주율은 3.14이다.\n둘째 줄입니다.'


def test_regex_backend():
    assert split_sentences(TEXT, "regex") == ["안녕하세요.", "오늘 날씨가 좋네요 그래서 산책을 갔어요!", '"정말?"',
                                              "그가 물었다.", "원주율은 3.14이다.", "둘째 줄입니다."]
    assert split_sentences("1. 서론 부분이다.", "regex") == ["1. 서론 부분이다."]


def test_kiwi_backend_finds_unpunctuated_ends():
    out = split_sentences(TEXT, "kiwi")
    assert "오늘 날씨가 좋네요" in out and "그래서 산책을 갔어요!" in out and out[-1] == "둘째 줄입니다."


def test_bad_backend():
    with pytest.raises(ValueError, match="kiwi or regex"):
        split_sentences("문장.", "spacy")
