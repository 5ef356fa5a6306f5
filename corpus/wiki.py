"""MediaWiki XML dumps: article pages as plain text.

Markup is converted with mwparserfromhell, not regexes: templates, tables, refs, comments, files,
categories and the "see also"/references sections are dropped, link text is kept. Templates that
carry article text (`{{lang|en|Seoul}}`, `{{llang|..}}`, `{{lang-en|..}}`, `{{음역|..}}`, `{{convert|5|km}}`,
see _TEXT_TEMPLATES) keep it; rendered error messages ("인용 오류: ...") and links the parser leaves
as text (a title holding `<` or `>`) do not reach the output. Redirects and
pages outside the article namespace (ns 0) are skipped and counted. The XML is parsed as a stream
(iterparse, finished pages cleared), so memory stays flat over a multi-GB dump.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, BinaryIO, Callable, Iterator

_NS_PREFIX = re.compile(
    r"^\s*:?\s*(?:파일|그림|file|image|분류|category|틀|template|위키백과|wikipedia|포털|portal|미디어|media|"
    r"특수|special|사용자|user|도움말|help|위키낱말사전|wiktionary|[a-z]{2,3}(?:-[a-z]+)?)\s*:", re.I)
_SKIP_TAGS = {"ref", "references", "table", "gallery", "math", "chem", "ce", "score", "timeline", "imagemap",
              "syntaxhighlight", "source", "pre", "nowiki", "includeonly", "noinclude", "templatedata",
              "graph", "mapframe", "maplink", "hiero", "categorytree"}
_DROP_SECTIONS = {"각주", "주석", "출처", "참고 문헌", "참고문헌", "외부 링크", "외부링크", "같이 보기", "함께 보기",
                  "관련 항목", "참조", "references", "notes", "see also", "external links", "further reading"}
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
# Templates that carry article text (kowiki and enwiki names, lower case, spaces as written): the
# 1-based positional parameter whose text is kept; "last" = the last positional one (transliterations),
# "join" = numbers and range words up to the first unit, joined by spaces ("5 - 10 km").
# Every other template is dropped.
_TEXT_TEMPLATES = {"lang": 2, "llang": 2, "언어": 2, "lang2": 2, "nowrap": 1, "nobr": 1, "small": 1, "big": 1,
                   "작은글씨": 1, "큰글씨": 1, "작게": 1, "크게": 1, "ill": 1, "illm": 1, "interlanguage link": 1,
                   "음역": "last", "transl": "last", "transliteration": "last", "convert": "join", "변환": "join",
                   "cvt": "join"}
# Error messages MediaWiki renders into a page ("인용 오류: <ref> 태그가 ..."), found pasted into
# wikitext and in rendered-text dumps: from the message to the end of its line goes.
RENDER_ERROR = re.compile(r"(?:인용 오류|틀 오류|스크립트 오류|Lua 오류|표현식 오류|Cite error|Script error|Lua error|"
                          r"Expression error)\s*:[^\n]*")
# A link the parser rejects (a title holding < or >) stays as text: its shown text or title is kept.
_LEFT_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")


def strip_render_errors(text: str) -> str:
    """`text` without rendered MediaWiki error messages (cheap when there is none)."""
    if "오류" not in text and "rror" not in text:
        return text
    return RENDER_ERROR.sub("", text)


def _template_text(node, strip) -> str:
    """The article text a template carries ("" for the templates that carry none)."""
    name = str(node.name).strip().lower().replace("_", " ")
    rule = _TEXT_TEMPLATES.get(name, 1 if name.startswith("lang-") else None)
    if rule is None:
        return ""
    pos = [p for p in node.params if not p.showkey]
    if rule == "join":   # numbers and range words, up to and including the first unit: "5 - 10 km"
        out = []
        for p in pos:
            v = strip(p.value).strip()
            out.append(v)
            if not (re.fullmatch(r"[-+]?[\d.,]+", v) or v in ("-", "–", "~", "to", "and", "or", "x", "by")):
                break
        return " ".join(out)
    if rule == "last":
        return strip(pos[-1].value).strip() if pos else ""
    return strip(pos[rule - 1].value).strip() if len(pos) >= rule else ""


def _left_link(m: re.Match) -> str:
    if m.group(2) is not None:
        return m.group(2)
    return "" if _NS_PREFIX.match(m.group(1)) else m.group(1)


def wiki_to_text(wikitext: str) -> str:
    """Plain text of a MediaWiki article (paragraphs and section titles, one per line)."""
    import mwparserfromhell as mw
    from mwparserfromhell.nodes import (Comment, ExternalLink, Heading, HTMLEntity, Tag, Template, Text,
                                        Wikilink)

    def strip(code) -> str:
        out: list[str] = []
        drop_level = 0
        for node in code.nodes:
            if isinstance(node, Heading):
                title = strip(node.title).strip()
                if drop_level and node.level > drop_level:
                    continue
                drop_level = node.level if title.lower() in _DROP_SECTIONS else 0
                if not drop_level:
                    out.append(f"\n{title}\n")
                continue
            if drop_level:
                continue
            if isinstance(node, Text):
                # parsed with skip_style_tags (faster, robust to unbalanced quotes): drop the bold/italic marks
                out.append(node.value.replace("\x27\x27\x27", "").replace("\x27\x27", ""))
            elif isinstance(node, Wikilink):
                title = str(node.title)
                if _NS_PREFIX.match(title):
                    continue
                out.append(strip(node.text) if node.text is not None else strip(node.title))
            elif isinstance(node, ExternalLink):
                if node.title is not None:
                    out.append(strip(node.title))
            elif isinstance(node, Tag):
                tag = str(node.tag).strip().lower()
                if tag in _SKIP_TAGS:
                    continue
                if tag in ("br", "p", "li", "dd", "dt", "div"):
                    out.append("\n")
                if node.contents is not None and not node.self_closing:
                    out.append(strip(node.contents))
            elif isinstance(node, HTMLEntity):
                out.append(node.normalize())
            elif isinstance(node, Template):
                out.append(_template_text(node, strip))
            elif isinstance(node, Comment):
                continue
        return "".join(out)

    text = strip(mw.parse(wikitext, skip_style_tags=True))
    if "[[" in text:
        text = _LEFT_LINK.sub(_left_link, text)
    return strip_render_errors(_MAGIC_WORD.sub("", text))


def read_wiki_pages(stream: BinaryIO, source: str, name: str, errors: Any, tick: Callable[[], None],
                    mine: Callable[[int], bool], counts: dict) -> Iterator[tuple[str, str]]:
    """(text, doc_id) for the article pages of a MediaWiki XML export read from `stream`.

    source/name: the corpus source and file name, for ids `source:name:page_id`. errors: the
    reader's ErrorLog (`add(file, kind, message)`); a page the parser fails on is recorded there.
    tick(): called every 64 pages (progress). mine(i): whether page i is this reader's (stride).
    counts["wiki_redirect"/"wiki_non_article"] get {"docs", "bytes"} of the skipped pages."""
    ctx = ET.iterparse(stream, events=("start", "end"))
    root = None
    ns = ""
    idx = 0
    n = 0
    for event, elem in ctx:
        if root is None:
            root = elem
            ns = elem.tag[:elem.tag.index("}") + 1] if elem.tag.startswith("{") else ""
            continue
        if event != "end" or elem.tag != ns + "page":
            continue
        n += 1
        if n % 64 == 0:
            tick()
        if mine(idx):
            text = elem.findtext(f"{ns}revision/{ns}text") or ""
            lead = text.lstrip()[:16].upper()
            if elem.find(f"{ns}redirect") is not None or lead.startswith(("#REDIRECT", "#넘겨주기")):
                _count(counts, "wiki_redirect", text)
            elif (elem.findtext(f"{ns}ns") or "0").strip() != "0":
                _count(counts, "wiki_non_article", text)
            else:
                page_id = (elem.findtext(f"{ns}id") or str(idx)).strip()
                try:
                    yield wiki_to_text(text), f"{source}:{name}:{page_id}"
                except Exception as e:  # a parser failure on one page must not stop the dump
                    errors.add(name, "wiki_markup", f"page {page_id}: {type(e).__name__}: {e}")
        idx += 1
        root.clear()  # drop finished pages: memory stays flat over a multi-GB dump
    tick()


def _count(counts: dict, key: str, text: str) -> None:
    c = counts.setdefault(key, {"docs": 0, "bytes": 0})
    c["docs"] += 1
    c["bytes"] += len(text.encode("utf-8"))
