"""Korean sentence splitting, for stages that want sentences (the tokenizer samples sentences).

    split_sentences(text, backend="kiwi" | "regex") -> list[str]

Lines (paragraphs) are always split first. "kiwi" then uses kiwipiepy's `Kiwi.split_into_sents`
(morphological: it finds sentence ends without punctuation, e.g. "...좋네요 그래서..."), one Kiwi
instance per process, loaded on first use (~1 s, ~100 MB). "regex" splits after ., !, ?, … and
their full-width forms when whitespace follows (closing quotes/brackets stay with the sentence), not
after a lone digit or capital ("1.", "J.") — fast and dependency-free, but it cannot see
unpunctuated sentence ends.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

_kiwi = None

_END = re.compile(r"(?<=[.!?…。！？])(?<![0-9A-Z][.])([\"'”’」』)\]]*)\s+(?=\S)")


def _get_kiwi():
    global _kiwi
    if _kiwi is None:
        from kiwipiepy import Kiwi

        _kiwi = Kiwi()
    return _kiwi


def _split_regex(line: str) -> list[str]:
    # mark boundaries with "\n" (lines contain none at this point), keeping closing quotes
    return [s for s in (p.strip() for p in _END.sub(lambda m: m.group(1) + "\n", line).split("\n")) if s]


def split_sentences(text: str, backend: str = "kiwi") -> list[str]:
    """Sentences of `text` (stripped, non-empty, in order). backend: "kiwi" or "regex"."""
    if backend not in ("kiwi", "regex"):
        raise ValueError(f"sentence splitter backend {backend!r}: use kiwi or regex (corpus.sentence_splitter)")
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if backend == "regex":
        return [s for ln in lines for s in _split_regex(ln)]
    kiwi = _get_kiwi()
    out: list[str] = []
    for ln in lines:
        if len(ln) < 8:
            out.append(ln)   # too short to hold two sentences: skip the analyzer
            continue
        out.extend(s for s in (x.text.strip() for x in kiwi.split_into_sents(ln)) if s)
    return out


def iter_sentences(texts: Iterable[str], backend: str = "kiwi", max_chars: Optional[int] = None):
    """Sentences of many documents in order; sentences longer than max_chars are skipped."""
    for t in texts:
        for s in split_sentences(t, backend):
            if max_chars is None or len(s) <= max_chars:
                yield s
