"""PII scrubbing: personal numbers and addresses replaced by placeholders the tokenizer keeps whole.

    scrub_pii(text) -> (text, {kind: n})

Kinds and placeholders (PLACEHOLDERS, also user_defined_symbols of the tokenizer, corpus/tokenizer.py):
  rrn    <|rrn|>    주민등록번호 / 외국인등록번호: YYMMDD-Gxxxxxx with a real month/day and G in 1-8
                    (also the masked form 900101-1******)
  tel    <|tel|>    Korean phone numbers: mobile 010/011/016-019 (separators optional, the same one
                    throughout), area codes 02, 031-064 and 070 (separators required), (02) 123-4567,
                    +82 forms
  email  <|email|>  addresses with a dotted domain
  acc    <|acc|>    bank accounts: 10-14 digits in 1-4 hyphenated groups, only with a banking word
                    (계좌, 입금, 은행, 예금주, a bank's name...) in the 30 characters before
  card   <|card|>   card numbers in 4-4-4-4 or 4-6-5 groups that pass the Luhn check
  ip     <|ip|>     IPv4 addresses (not when every octet is one digit: section numbers like 1.2.3.4)

False positives are avoided on purpose: dates (2024-01-15, 2024.01.15), prices (1,234,000원), years,
ordinary long numbers and customer-centre numbers (1588-1234) are left alone; a number is only
replaced when its shape (and check digits or context, for cards and accounts) says what it is.
A cheap regex finds runs of digits and separators; the full pattern runs only inside them; e-mail
runs only on documents containing "@".
"""
from __future__ import annotations

import re

PLACEHOLDERS = {"rrn": "<|rrn|>", "tel": "<|tel|>", "email": "<|email|>", "acc": "<|acc|>", "card": "<|card|>",
                "ip": "<|ip|>"}
KINDS = tuple(PLACEHOLDERS)

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                    r"(?![A-Za-z0-9-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_NUM = re.compile(
    r"(?<![\d.\-+])(?:"
    r"(?P<rrn>\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[ ]?-[ ]?[1-8](?:\d{6}|\*{6}))"
    r"|(?P<card>\d{4}(?P<cs>[- ])\d{4}(?P=cs)\d{4}(?P=cs)\d{4}|\d{4}(?P<as>[- ])\d{6}(?P=as)\d{5})"
    r"|(?P<tel>(?:\+82[- ]?|0)1[016789](?P<ms>[-. ]?)\d{3,4}(?P=ms)\d{4}"
    r"|(?:\+82[- ]?|0)(?:2|[3-6][1-5]|70)(?P<ls>[-. ])\d{3,4}(?P=ls)\d{4}"
    r"|\(0(?:2|[3-6][1-5]|70|1[016789])\)[ ]?\d{3,4}[-. ]\d{4})"
    r"|(?P<ip>" + _OCTET + r"(?:\." + _OCTET + r"){3})"
    r"|(?P<acc>\d{2,6}(?:-\d{2,7}){1,3}|\d{10,14})"
    r")(?![\d\-]|\.\d|\*)")
# Where _NUM can match: a run of digits and separators (the lookbehind of _NUM still sees the text
# before the run, and the run ends where no separator or digit follows, as _NUM's lookahead needs).
_CANDIDATE = re.compile(r"[\d(+][\d\-. )*]{5,}[\d*]")
_BANK_WORDS = re.compile(r"계좌|입금|송금|이체|은행|예금주|농협|신한|국민|우리|하나|기업|카카오뱅크|케이뱅크|토스뱅크|"
                         r"우체국|새마을|신협|수협|씨티|SC제일|account", re.I)
_CONTEXT = 30
_UNITS = set("원억만조천달%$")   # an amount, not an account ("" is in no set: end of text is fine)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _kind(m: re.Match) -> str:
    """Which PII kind the numeric candidate `m` is, or "" to leave it alone."""
    if m.group("rrn"):
        return "rrn"
    if m.group("card"):
        return "card" if _luhn(re.sub(r"\D", "", m.group("card"))) else ""
    if m.group("tel"):
        return "tel"
    if m.group("ip"):
        return "" if all(len(o) == 1 for o in m.group("ip").split(".")) else "ip"
    acc = m.group("acc")
    if acc and 10 <= sum(c.isdigit() for c in acc) <= 14 and m.string[m.end():m.end() + 1] not in _UNITS:
        before = m.string[max(0, m.start() - _CONTEXT):m.start()]
        if _BANK_WORDS.search(before):
            return "acc"
    return ""


def scrub_pii(text: str) -> tuple[str, dict]:
    """`text` with PII replaced by placeholders, and {kind: replacements} for the kinds found."""
    found: dict = {}
    if "@" in text:
        text, n = _EMAIL.subn(PLACEHOLDERS["email"], text)
        if n:
            found["email"] = n

    out: list[str] = []
    last = 0
    for c in _CANDIDATE.finditer(text):   # the full pattern only runs on digit runs (~10x faster)
        for m in _NUM.finditer(text, c.start(), c.end()):
            kind = _kind(m)
            if kind:
                found[kind] = found.get(kind, 0) + 1
                out += (text[last:m.start()], PLACEHOLDERS[kind])
                last = m.end()
    if not out:
        return text, found
    out.append(text[last:])
    return "".join(out), found
