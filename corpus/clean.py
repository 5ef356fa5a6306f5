"""Text normalization and document filters for the corpus stage.

`Cleaner.clean_batch(texts)` cleans a batch of documents at once; the per-character work runs in numpy
over the whole batch (one UTF-32 array, documents separated by U+0000), so the Python cost per
document is a few list operations. Steps, in order:

1. per document, only where needed: HTML entities (`html.unescape`, documents containing "&") and
   Unicode NFC (documents failing `unicodedata.is_normalized`);
2. boilerplate lines dropped (news bylines with e-mail, "무단 전재 및 재배포 금지", Copyright/ⓒ lines,
   "▶" related-article lines; plus `corpus.filters.boilerplate_patterns`), only in documents where a
   keyword occurs; news datelines cut from the start of a line ("(서울=연합뉴스) 홍길동 기자 = ",
   "[세종=뉴시스]", "【워싱턴=뉴시스】 김철수 특파원 = "), only in documents containing "=";
3. numpy, per character: control and zero-width characters deleted, every space character becomes
   " " and every line break "\\n", runs of spaces collapse, lines are stripped, blank lines dropped,
   runs of one character longer than `max_char_repeat` cut to that length;
4. one `np.bincount` gives per-document counts (chars, spaces, Hangul, digits, symbols, newlines,
   UTF-8 bytes) and the document filters below are vectorized masks over those counts.

Each filter is a small named function `(BatchStats, FilterConfig) -> bool mask of rejected docs`,
listed in FILTERS in the order they are applied; a dropped document is counted (docs, UTF-8 bytes
of its cleaned text) under the first filter that rejects it. Modifiers (normalize, boilerplate_lines,
dateline, char_repeat) count the documents they changed and the bytes they removed.
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from common.schema import FilterConfig

SEP = "\x00"  # document separator inside a batch; readers never pass NUL through (they strip it)

# character classes (uint8 codes in the class table)
C_OTHER, C_HANGUL, C_DIGIT, C_SYMBOL, C_SPACE, C_NL, C_SEP, C_DEL = range(8)
N_CLASSES = 8

# Default boilerplate (line regexes, searched; a line matching any is dropped if <= 200 chars).
DEFAULT_BOILERPLATE = [
    r"기자\s*[(\[<]?\s*(?:[\w.+-]+@[\w-]+(?:\.[\w-]+)+|<\|email\|>)",   # 홍길동 기자 hong@yna.co.kr
    r"^\s*[(\[<]?(?:[\w.+-]+@[\w-]+(?:\.[\w-]+)+|<\|email\|>)[)\]>]?\s*$",   # a bare e-mail line
    # (<|email|>: the address was already replaced by the input's PII step, corpus/pii.py)
    r"무단\s*(?:전재|복제|배포|게재|복사)",                       # 무단 전재 및 재배포 금지
    r"재배포\s*금지",
    r"(?i:copyright)\s*(?:ⓒ|©|\(c\)|\d{4})",
    r"[ⓒ©]",
    r"저작권자\s*[(ⓒ©]",
    r"^\s*[▶☞►]",                                            # ▶ 관련기사 / ☞ 앱 다운로드
]
# A document is only searched for the default patterns if one of these occurs in it (plain substring
# search over the whole batch is ~4x faster than one regex alternation).
_BOILERPLATE_KEYWORDS = ("@", "<|email|>", "ⓒ", "©", "▶", "☞", "►", "무단", "재배포", "저작권자", "opyright", "OPYRIGHT")
# A news dateline at the start of a line: "(서울=연합뉴스) 홍길동 기자 = ", "[세종=뉴시스]", "【워싱턴=뉴시스】
# 김철수 특파원 =", "(서울=뉴스1) 이영희 박민수 기자 =". The place is Hangul (so "(x=3)" is left alone); the
# reporter part is only taken with its 기자/특파원/통신원 and the "=" after it.
_DATELINE = re.compile(
    r"^[ \t]*[(\[【<〔][ \t]*[가-힣]{2,10}[ \t]*=[ \t]*[가-힣A-Za-z0-9]{2,12}[ \t]*[)\]】>〕]"
    r"(?:[ \t]*[가-힣]{2,4}(?:[ \t]*[·,]?[ \t]*[가-힣]{2,4}){0,3}[ \t]*(?:기자|특파원|통신원)[ \t]*=)?[ \t]*",
    re.M)
_AMP = re.compile(r"&[#\w]")   # an HTML entity may start here
BOILERPLATE_MAX_LINE_CHARS = 200  # longer lines are text, not boilerplate, whatever they contain


# ----------------------------------------------------------------------------------------------------
# character table


@lru_cache(maxsize=1)
def class_table() -> np.ndarray:
    """uint8 class of every code point (0x110000 entries, ~1.1 MB), built once per process (~0.1 s)."""
    t = np.full(0x110000, C_OTHER, dtype=np.uint8)
    for cp in range(0x10000):
        cat = unicodedata.category(chr(cp))
        if cat[0] in "PS":
            t[cp] = C_SYMBOL
        elif cat == "Nd":
            t[cp] = C_DIGIT
        elif cat in ("Cc", "Cf", "Cs", "Cn") or cat == "Zl" or cat == "Zp" or cat == "Zs":
            t[cp] = C_DEL if cat[0] == "C" else C_SPACE
    # astral planes: emoji and pictographs are symbols, unassigned/tags/format chars are deleted
    t[0x1F000:0x1FB00] = C_SYMBOL
    t[0xE0000:0xE0080] = C_DEL
    t[0xFFFF0:] = C_OTHER  # private use planes stay as "other"
    for lo, hi in ((0xAC00, 0xD7A4), (0x1100, 0x1200), (0x3130, 0x3190), (0xA960, 0xA980), (0xD7B0, 0xD800)):
        t[lo:hi] = C_HANGUL
    t[[0x09, 0x20, 0xA0, 0x1680, 0x202F, 0x205F, 0x3000]] = C_SPACE
    t[0x2000:0x200B] = C_SPACE
    t[[0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]] = C_NL
    t[0xE000:0xF900] = C_OTHER   # private use area: kept (old Hangul fonts use it)
    t[0xD800:0xE000] = C_DEL     # lone surrogates
    t[0x00AD] = C_DEL            # soft hyphen
    t[0xFFFD] = C_DEL            # replacement character: a decoding error upstream, never text
    t[0] = C_SEP
    return t


@dataclass
class BatchStats:
    """Per-document counts over cleaned text; every array has shape (n_docs,), int64."""

    chars: np.ndarray      # code points
    nonspace: np.ndarray   # code points that are not spaces or newlines
    hangul: np.ndarray     # Hangul syllables and jamo
    digit: np.ndarray      # Unicode Nd
    symbol: np.ndarray     # Unicode P* and S*, emoji
    newlines: np.ndarray
    bytes: np.ndarray      # UTF-8 bytes


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return num / np.maximum(den, 1)


# ----------------------------------------------------------------------------------------------------
# filters: (stats, cfg, texts) -> mask of rejected documents


def f_min_chars(st: BatchStats, cfg: FilterConfig, texts: list[str]) -> np.ndarray:
    return (st.chars < cfg.min_chars) | (st.nonspace == 0)


def f_max_chars(st: BatchStats, cfg: FilterConfig, texts: list[str]) -> np.ndarray:
    return st.chars > cfg.max_chars


def f_hangul_ratio(st: BatchStats, cfg: FilterConfig, texts: list[str]) -> np.ndarray:
    return _ratio(st.hangul, st.nonspace) < cfg.min_hangul_ratio


def f_symbol_ratio(st: BatchStats, cfg: FilterConfig, texts: list[str]) -> np.ndarray:
    return _ratio(st.symbol, st.nonspace) > cfg.max_symbol_ratio


def f_digit_ratio(st: BatchStats, cfg: FilterConfig, texts: list[str]) -> np.ndarray:
    return _ratio(st.digit, st.nonspace) > cfg.max_digit_ratio


def f_dup_lines(st: BatchStats, cfg: FilterConfig, texts: list[str]) -> np.ndarray:
    """Fraction of a document's lines that repeat an earlier line; only multi-line documents."""
    out = np.zeros(len(texts), dtype=bool)
    for i in np.flatnonzero(st.newlines > 0):
        lines = texts[i].split("\n")
        out[i] = 1.0 - len(set(lines)) / len(lines) > cfg.max_dup_line_ratio
    return out


FILTERS: list[tuple[str, Callable[[BatchStats, FilterConfig, list[str]], np.ndarray]]] = [
    ("min_chars", f_min_chars),
    ("max_chars", f_max_chars),
    ("hangul_ratio", f_hangul_ratio),
    ("symbol_ratio", f_symbol_ratio),
    ("digit_ratio", f_digit_ratio),
    ("dup_lines", f_dup_lines),
]
MODIFIERS = ("normalize", "boilerplate_lines", "dateline", "char_repeat")


# ----------------------------------------------------------------------------------------------------
# numpy normalization


def _utf8_len(arr: np.ndarray) -> np.ndarray:
    return 1 + (arr >= 0x80).astype(np.int64) + (arr >= 0x800) + (arr >= 0x10000)


def _normalize_arr(arr: np.ndarray, cls: np.ndarray, max_repeat: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Whitespace, control characters and character runs on a batch's code points.

    arr: (n_chars,) uint32 code points with 0 between documents; cls: their classes (uint8).
    Returns (arr, cls, doc, changed, cut): the normalized code points, their classes and document
    index (all the same shape); `changed` the indices of documents whose text changed here; `cut` a
    bool mask over the returned arrays marking characters of over-long runs (not yet removed, so the
    caller can count them).
    """
    doc = np.cumsum(cls == C_SEP)
    changed = []
    keep = cls != C_DEL
    if not keep.all():
        changed.append(doc[~keep])
        arr, cls, doc = arr[keep], cls[keep], doc[keep]
    arr = arr.copy()
    is_sp = cls == C_SPACE
    is_nl = cls == C_NL
    remapped = (is_sp & (arr != 0x20)) | (is_nl & (arr != 0x0A))
    if remapped.any():
        changed.append(doc[remapped])
    arr[is_sp] = 0x20
    arr[is_nl] = 0x0A
    content = cls < C_SPACE
    nc = ~content
    # A "gap" is a maximal run of non-content chars (spaces, newlines, separators). gap_id numbers
    # them: a non-content char's gap_id is the number of content chars before it.
    gap_id = np.cumsum(content)
    is_sep = cls == C_SEP
    n_gaps = int(gap_id[-1]) + 1 if len(arr) else 1
    # gaps holding a separator, or starting/ending the string, vanish (documents are stripped)
    edge_gap = np.zeros(n_gaps, dtype=bool)
    edge_gap[gap_id[is_sep]] = True
    edge_gap[0] = True
    edge_gap[-1] = True
    nl_gap = np.zeros(n_gaps, dtype=bool)
    nl_gap[gap_id[is_nl]] = True
    first_in_gap = nc.copy()
    first_in_gap[1:] &= content[:-1]
    inner = nc & ~edge_gap[gap_id]
    keep = content | is_sep
    # an interior gap keeps one char: its first newline if it has one, else its first char (a space)
    keep |= inner & first_in_gap & ~nl_gap[gap_id]
    nl_pos = np.flatnonzero(is_nl & inner)
    if len(nl_pos):
        firsts = np.ones(len(nl_pos), dtype=bool)
        firsts[1:] = gap_id[nl_pos[1:]] != gap_id[nl_pos[:-1]]
        keep[nl_pos[firsts]] = True
    if not keep.all():
        changed.append(doc[~keep])
        arr, cls, doc = arr[keep], cls[keep], doc[keep]
    cut = np.zeros(len(arr), dtype=bool)
    if max_repeat > 0 and len(arr) > max_repeat:
        same = np.zeros(len(arr), dtype=bool)
        same[1:] = arr[1:] == arr[:-1]
        if same.sum() >= max_repeat:
            idx = np.arange(len(arr))
            run_start = np.maximum.accumulate(np.where(same, 0, idx))
            cut = (idx - run_start >= max_repeat) & (cls < C_SPACE)
    ch = np.unique(np.concatenate(changed)) if changed else np.zeros(0, dtype=np.int64)
    return arr, cls, doc, ch, cut


def _find_all(s: str, sub: str) -> list[int]:
    """Every start offset of `sub` in `s` (str.find loop: C-speed scanning between hits)."""
    out, i = [], s.find(sub)
    while i >= 0:
        out.append(i)
        i = s.find(sub, i + 1)
    return out


class Cleaner:
    """Normalizes and filters batches of documents with one FilterConfig (build once per process)."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.table = class_table()
        pats = list(DEFAULT_BOILERPLATE) if cfg.drop_boilerplate_lines else []
        self._dateline = _DATELINE if cfg.drop_boilerplate_lines else None
        self._bp_default = re.compile("|".join(f"(?:{p})" for p in pats)) if pats else None
        try:
            extra = [re.compile(p) for p in cfg.boilerplate_patterns]
        except re.error as e:
            raise ValueError(f"corpus.filters.boilerplate_patterns: invalid regex ({e}); "
                             "give Python regexes matched against single lines") from None
        self._bp_extra = re.compile("|".join(f"(?:{p.pattern})" for p in extra)) if extra else None

    # -- single documents (tests, tools) --------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """The cleaned text of one document (no filters): same steps as clean_batch."""
        texts, _, _ = self._normalize_batch([text.replace(SEP, "")])
        return texts[0]

    # -- batches ----------------------------------------------------------------------------------------
    def _drop_lines(self, text: str) -> tuple[str, int]:
        """Remove boilerplate lines from one document; returns (text, UTF-8 bytes removed)."""
        out, removed = [], 0
        for line in text.split("\n"):
            bp = (self._bp_default is not None and len(line) <= BOILERPLATE_MAX_LINE_CHARS
                  and self._bp_default.search(line)) or (self._bp_extra is not None and self._bp_extra.search(line))
            if bp:
                removed += len(line.encode("utf-8")) + 1
            else:
                out.append(line)
        return ("\n".join(out), removed) if removed else (text, 0)

    def _normalize_batch(self, texts: list[str]) -> tuple[list[str], BatchStats, dict]:
        """Steps 1-3 of the module docstring; returns (cleaned texts, stats, modifier counts)."""
        mods = {k: {"docs": 0, "bytes": 0} for k in MODIFIERS}
        texts = list(texts)
        joined = SEP.join(texts)
        # document start offsets (chars) in `joined`, to map regex hits on the batch to documents
        starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
        fix = set()
        if "&" in joined:
            fix.update(np.searchsorted(starts, [m.start() for m in _AMP.finditer(joined)], "right") - 1)
        if not unicodedata.is_normalized("NFC", joined):
            fix.update(i for i, t in enumerate(texts) if not unicodedata.is_normalized("NFC", t))
        fixed = []
        for i in sorted(fix):
            t = texts[i]
            t2 = unicodedata.normalize("NFC", html.unescape(t) if "&" in t else t).replace(SEP, "")
            if t2 != t:
                fixed.append(i)
                texts[i] = t2
        if self._bp_default is not None or self._bp_extra is not None:
            if self._bp_extra is not None:
                cand = range(len(texts))
            else:
                hits = [pos for kw in _BOILERPLATE_KEYWORDS for pos in _find_all(joined, kw)]
                cand = np.unique(np.searchsorted(starts, hits, "right") - 1) if hits else []
            for i in cand:
                t, removed = self._drop_lines(texts[i])
                if removed:
                    texts[i] = t
                    mods["boilerplate_lines"]["docs"] += 1
                    mods["boilerplate_lines"]["bytes"] += removed
        if self._dateline is not None and "=" in joined:
            for i in np.unique(np.searchsorted(starts, _find_all(joined, "="), "right") - 1):
                t = self._dateline.sub("", texts[i])
                if t != texts[i]:
                    mods["dateline"]["docs"] += 1
                    mods["dateline"]["bytes"] += len(texts[i].encode("utf-8")) - len(t.encode("utf-8"))
                    texts[i] = t
        if fixed or mods["boilerplate_lines"]["docs"] or mods["dateline"]["docs"]:
            joined = SEP.join(texts)
        arr = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        bytes_before = len(joined.encode("utf-8")) - (len(texts) - 1)
        arr, cls, doc, changed, cut = _normalize_arr(arr, self.table[arr], self.cfg.max_char_repeat)
        if cut.any():
            mods["char_repeat"]["docs"] += int(len(np.unique(doc[cut])))
            mods["char_repeat"]["bytes"] += int(_utf8_len(arr[cut]).sum())
            keep = ~cut
            arr, cls, doc = arr[keep], cls[keep], doc[keep]
        u8 = (1 + (arr >= 0x80).astype(np.uint8) + (arr >= 0x800) + (arr >= 0x10000)).astype(np.int64)
        code = doc * (N_CLASSES * 4) + cls.astype(np.int64) * 4 + (u8 - 1)
        counts = np.bincount(code, minlength=len(texts) * N_CLASSES * 4).reshape(len(texts), N_CLASSES, 4)
        per_cls = counts.sum(axis=2)
        nbytes = (counts * np.arange(1, 5)).sum(axis=(1, 2)) - counts[:, C_SEP, 0]
        chars = per_cls.sum(axis=1) - per_cls[:, C_SEP]
        st = BatchStats(chars=chars, nonspace=chars - per_cls[:, C_SPACE] - per_cls[:, C_NL],
                        hangul=per_cls[:, C_HANGUL], digit=per_cls[:, C_DIGIT], symbol=per_cls[:, C_SYMBOL],
                        newlines=per_cls[:, C_NL], bytes=nbytes)
        mods["normalize"]["docs"] = int(len(np.union1d(np.asarray(fixed, dtype=np.int64), changed)))
        mods["normalize"]["bytes"] += max(0, bytes_before - int(nbytes.sum()) - mods["char_repeat"]["bytes"])
        cleaned = arr.tobytes().decode("utf-32-le").split(SEP)
        assert len(cleaned) == len(texts), (len(cleaned), len(texts))
        return cleaned, st, mods

    def clean_batch(self, texts: list[str]) -> tuple[list[str], np.ndarray, BatchStats, dict]:
        """Clean and filter a batch.

        Returns (cleaned texts (all, same order), keep mask (n,) bool, stats of the cleaned texts,
        counts {name: {"docs", "bytes"}} for every filter and modifier).
        """
        if not texts:
            empty = np.zeros(0, dtype=np.int64)
            return [], np.zeros(0, dtype=bool), BatchStats(*([empty] * 7)), {}
        cleaned, st, counts = self._normalize_batch(texts)
        rejected = np.zeros(len(cleaned), dtype=bool)
        for name, fn in FILTERS:
            mask = fn(st, self.cfg, cleaned) & ~rejected
            counts[name] = {"docs": int(mask.sum()), "bytes": int(st.bytes[mask].sum())}
            rejected |= mask
        return cleaned, ~rejected, st, counts
