"""Cleaning steps whose setting belongs to an input (corpus.inputs[]), applied as documents are read.

    InputCleaner.for_input(seg, fmt) -> InputCleaner | None
    cleaner.apply(text, counts) -> text

Steps, in order, each on when its input key says so (None = by format, see `for_input`):
  drop_placeholders  de-identification placeholders left by the corpus makers are dropped: AI Hub's
                     "(이름)", "(주소)", "#@이름#", NIKL's "&name&", "&account1&" (default: aihub, nikl)
  pii                corpus/pii.py: 주민등록번호, phones, e-mail, accounts, cards, IPs -> <|rrn|> ...
                     (default: on except for wiki and namuwiki)
  normalize_repeats  ㅋㅋㅋㅋㅋ -> ㅋㅋㅋ, ㅠㅠㅠㅠ -> ㅠㅠ, !!!!!! -> !!! (consonant jamo and . ! ? ~ runs to 3,
                     vowel jamo runs to 2; default: on except for wiki and namuwiki)

Counts (added to the manifest's `filters`): {"pii": {"docs", "bytes" (UTF-8 bytes of the replaced
text), "rrn", "tel", "email", "acc", "card", "ip"}, "repeats": {"docs", "bytes" removed},
"placeholders": {"docs", "bytes" removed}}.
Why here and not in corpus/clean.py: the Cleaner is one per process for all inputs, while these
settings differ per input (a wiki has no phone numbers to scrub, but many numbers to keep).
"""
from __future__ import annotations

import re
from typing import Optional

from corpus.pii import KINDS, scrub_pii

ENCYCLOPEDIC = ("wiki", "namuwiki")

_REPEAT_CONS = re.compile(r"([ㄱ-ㅎ])\1{3,}")
_REPEAT_VOWEL = re.compile(r"([ㅏ-ㅣ])\1{2,}")
_REPEAT_PUNCT = re.compile(r"([!?.~])\1{3,}")
_DEID_WORDS = (r"이름|성명|성함|주소|소속|전화번호|연락처|휴대폰번호|계좌번호|카드번호|주민번호|주민등록번호|이메일|"
               r"학교|학교명|회사|회사명|직장|기관|기관명|지역|지명|나이|생년월일|날짜|아이디|상호|상호명|URL|url")
_DEID = re.compile(r"(?:\((?:" + _DEID_WORDS + r")\d*\)|#@(?:[가-힣A-Za-z]+)(?:#[가-힣A-Za-z0-9]+)*#"
                   r"|&(?:name|address|account|card-num|num|phone|tel|email|social-security-num|company-name|"
                   r"affiliation|school|url|other|birthday|id|passport|car-num|cellphone)\d*&)")
_JAMO = re.compile(r"[ㄱ-ㅣ]")


class InputCleaner:
    def __init__(self, pii: bool, repeats: bool, placeholders: bool):
        self.pii, self.repeats, self.placeholders = pii, repeats, placeholders

    @classmethod
    def for_input(cls, seg, fmt: str) -> Optional["InputCleaner"]:
        """The steps for a segment of an input in format `fmt` (its None settings resolved by format)."""
        pii = seg.pii if seg.pii is not None else fmt not in ENCYCLOPEDIC
        rep = seg.normalize_repeats if seg.normalize_repeats is not None else fmt not in ENCYCLOPEDIC
        ph = seg.drop_placeholders if seg.drop_placeholders is not None else fmt in ("aihub", "nikl")
        return cls(pii, rep, ph) if (pii or rep or ph) else None

    def apply(self, text: str, counts: dict) -> str:
        """The cleaned text; `counts` gets the step counts (entries created even when zero)."""
        if self.placeholders:
            c = counts.setdefault("placeholders", {"docs": 0, "bytes": 0})
            t = _DEID.sub("", text) if ("(" in text or "#@" in text or "&" in text) else text
            if t != text:
                c["docs"] += 1
                c["bytes"] += len(text.encode("utf-8")) - len(t.encode("utf-8"))
                text = t
        if self.pii:
            c = counts.setdefault("pii", {"docs": 0, "bytes": 0, **{k: 0 for k in KINDS}})
            t, found = scrub_pii(text)
            if found:
                c["docs"] += 1
                # bytes of the replaced text: length change plus the placeholders' own bytes
                c["bytes"] += len(text.encode("utf-8")) - len(t.encode("utf-8")) + sum(
                    n * len(f"<|{k}|>") for k, n in found.items())
                for k, n in found.items():
                    c[k] += n
                text = t
        if self.repeats:
            c = counts.setdefault("repeats", {"docs": 0, "bytes": 0})
            t = text
            if _JAMO.search(t) is not None:   # compatibility jamo: rare outside chat text
                t = _REPEAT_VOWEL.sub(r"\1\1", _REPEAT_CONS.sub(r"\1\1\1", t))
            if "...." in t or "!!!!" in t or "????" in t or "~~~~" in t:   # substring tests: C speed
                t = _REPEAT_PUNCT.sub(r"\1\1\1", t)
            if t != text:
                c["docs"] += 1
                c["bytes"] += len(text.encode("utf-8")) - len(t.encode("utf-8"))
                text = t
        return text

