"""namumark (나무위키 markup) to plain text.

    namu_to_text(markup) -> str

Written here because no maintained library fits: the one PyPI package for it (namu-wiki-extractor
0.3.0, last released 2022) keeps table cells as text, removes anything between two `$` signs (prices)
and renders `[age(...)]` / `[dday(...)]` from today's date, so the same dump would give different
text on different days. The rules below are line and regex based; each says why.

Kept: paragraph text, the shown text of links (`[[문서|보이는 글]]` -> 보이는 글, `[[문서#s-1]]` -> 문서),
text inside formatting (`'''굵게'''`, `''기울임''`, `__밑줄__`, `^^위^^`, `,,아래,,`, `{{{+1 크게}}}`,
`{{{#red 색}}}`, `{{{#!wiki style="..." 내용}}}`, `{{{#!folding 제목 내용}}}`, `{{{글자 그대로}}}`), heading
titles (one per line), `[ruby(글자, ruby=루비)]` -> 글자, `[br]` -> line break.
Dropped: tables (`|| ... ||` rows, also when a cell spans lines), footnotes `[* ...]` (their markers
and notes), includes and macros (`[include(틀:...)]`, `[목차]`, `[각주]`, `[age(...)]`, `[youtube(...)]`),
files and categories (`[[파일:...]]`, `[[분류:...]]`), external links without shown text, raw HTML and
code blocks (`{{{#!html ...}}}`, `{{{#!syntax ...}}}`), `<math>`, `~~취소선~~` and `--취소선--`
(struck-through text is not the article's statement), comments (`##`), horizontal rules, list and
quote markers, backslash escapes.
"""
from __future__ import annotations

import re

_BLOCK = re.compile(r"\{\{\{((?:(?!\{\{\{|\}\}\}).)*)\}\}\}", re.S)   # an innermost {{{ ... }}}
_BLOCK_DROP = re.compile(r"^#!(?:html|syntax|latex)\b", re.I)
_BLOCK_WIKI = re.compile(r"^#!wiki\b(?:\s+style\s*=\s*\"[^\"]*\"|\s+[a-z-]+\s*=\s*\"[^\"]*\")*\s*", re.I)
_BLOCK_FOLD = re.compile(r"^#!folding\b[^\n]*\n?", re.I)
_BLOCK_STYLE = re.compile(r"^(?:[+-][1-5]|#[0-9a-zA-Z]+(?:,\s*#[0-9a-zA-Z]+)?)(?:\s+|$)")
_TEXTBOX = re.compile(r"\{\{\|(.*?)\|\}\}", re.S)
_FILE_LINK = re.compile(r"\[\[\s*:?\s*(?:파일|file|분류|category)\s*:[^\[\]]*\]\]", re.I)
_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
_FOOTNOTE = re.compile(r"\[\*[^\[\]]*\]")
_RUBY = re.compile(r"\[ruby\(([^,)]*)[^)]*\)\]", re.I)
_BR = re.compile(r"\[br\]", re.I)
_MACRO = re.compile(r"\[(?:include|age|dday|date|datetime|pagecount|youtube|kakaotv|nicovideo|vimeo|navertv|"
                    r"anchor|clearfix|목차|tableofcontents|각주|footnote|math)(?:\([^()\n]*\))?\]", re.I)
_MATH = re.compile(r"<math>.*?</math>", re.S | re.I)
_HEADING = re.compile(r"^\s*(={1,6})#?\s*(.*?)\s*#?\1\s*$")
_STYLE = [(re.compile(r"'''(.+?)'''"), r"\1"), (re.compile(r"''(.+?)''"), r"\1"),
          (re.compile(r"__(.+?)__"), r"\1"), (re.compile(r"\^\^(.+?)\^\^"), r"\1"), (re.compile(r",,(.+?),,"), r"\1"),
          (re.compile(r"~~.+?~~"), ""), (re.compile(r"(?<![-\w])--(?=\S)(?!-)[^\n]*?(?<=\S)(?<!-)--(?![-\w])"), "")]
_LIST = re.compile(r"^\s*(?:\*|[1aAiI]\.(?:#\d+)?)\s*")
_QUOTE = re.compile(r"^\s*>+\s?")
_RULE = re.compile(r"^\s*-{4,9}\s*$")
_ESCAPE = re.compile(r"\\(.)")
_PROTECT = "\ue000"   # stands for an escaped char while the markup rules run (private use: never in text)


def _blocks(text: str) -> str:
    """Resolve {{{ }}} blocks innermost first (they nest)."""
    def one(m: re.Match) -> str:
        body = m.group(1)
        if _BLOCK_DROP.match(body):
            return ""
        w = _BLOCK_WIKI.match(body)
        if w:
            return body[w.end():]
        f = _BLOCK_FOLD.match(body)
        if f:
            return body[f.end():]
        s = _BLOCK_STYLE.match(body)
        return body[s.end():] if s else body

    for _ in range(32):   # nesting deeper than this is left as text
        new = _BLOCK.sub(one, text)
        if new == text:
            break
        text = new
    return text


def _link(m: re.Match) -> str:
    target, shown = m.group(1), m.group(2)
    if shown is not None:
        return shown
    if re.match(r"\s*(?:https?|ftp)://", target):
        return ""
    target = target.split("#", 1)[0] if not target.startswith("#") else target[1:]
    return target.strip().lstrip(":")


def namu_to_text(markup: str) -> str:
    """Plain text of a namuwiki article (paragraphs and heading titles, one per line)."""
    escapes: list[str] = []

    def protect(m: re.Match) -> str:
        escapes.append(m.group(1))
        return _PROTECT

    text = _ESCAPE.sub(protect, markup.replace(_PROTECT, ""))
    text = _MATH.sub("", text)
    text = _blocks(text)
    text = _TEXTBOX.sub(r"\1", text)
    lines: list[str] = []
    in_table = False
    for line in text.split("\n"):
        s = line.strip()
        if in_table:   # a table cell spanning lines ends at a line ending in ||
            in_table = not s.endswith("||")
            continue
        if s.startswith("||"):
            in_table = not (s.endswith("||") and len(s) > 2)
            continue
        if s.startswith("##") or _RULE.match(s):
            continue
        h = _HEADING.match(line)
        if h:
            lines.append(h.group(2))
            continue
        lines.append(_LIST.sub("", _QUOTE.sub("", line)))
    text = "\n".join(lines)
    text = _FILE_LINK.sub("", text)
    for _ in range(4):   # a link inside a footnote, a footnote inside a link's text
        new = _LINK.sub(_link, _FOOTNOTE.sub("", text))
        if new == text:
            break
        text = new
    text = _RUBY.sub(r"\1", text)
    text = _BR.sub("\n", text)
    text = _MACRO.sub("", text)
    for pat, rep in _STYLE:
        text = pat.sub(rep, text)
    if escapes:
        it = iter(escapes)
        text = re.sub(_PROTECT, lambda m: next(it), text)
    return "\n".join(ln.strip() for ln in text.split("\n") if ln.strip())
