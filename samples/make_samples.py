#!/usr/bin/env python3
"""Build the sample corpus in samples/corpus/ from the readable sources in samples/src/.

Deterministic: the same sources always give byte-identical outputs (bz2 has no timestamps, JSON keys
are written in a fixed order, every "random" choice below is a rule on the item's position).

    python3 samples/make_samples.py            # (re)write samples/corpus/* and the tally in samples/README.md
    python3 samples/make_samples.py --check    # exit 1 if the committed files differ from a fresh build

Outputs (the formats a real run feeds to the corpus stage):
  kowiki-sample-pages-articles.xml.bz2  MediaWiki XML export (export-0.10 schema, like the kowiki dump)
  news.jsonl                            {"id", "title", "text", "date", "section"} per line, with planted noise
  dialogue.txt                          informal text, documents separated by a blank line
  legacy-cp949.txt                      one document per line, CP949 bytes, CRLF line ends
  nikl-sample-messenger.json            모두의 말뭉치 (NIKL) messenger layout: document[].utterance[]

The planted noise (what the corpus cleaner must remove, drop or deduplicate) is applied here, not in
the sources, and listed with the affected ids in the generated block of samples/README.md.
Standard library only, so it runs with plain python3.
"""
from __future__ import annotations

import argparse
import bz2
import hashlib
import html
import json
import os
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape as xml_escape

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
OUT = os.path.join(HERE, "corpus")
README = os.path.join(HERE, "README.md")
BEGIN, END = "<!-- BEGIN GENERATED: make_samples.py -->", "<!-- END GENERATED -->"

WIKI_OUT = "kowiki-sample-pages-articles.xml.bz2"
NEWS_OUT = "news.jsonl"
DIALOGUE_OUT = "dialogue.txt"
LEGACY_OUT = "legacy-cp949.txt"
MESSENGER_OUT = "nikl-sample-messenger.json"

ZWSP, NBSP = "\u200b", "\u00a0"


def read_src(*parts: str) -> str:
    path = os.path.join(SRC, *parts)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "\r" in text:
        raise ValueError(f"{path}: sources must use LF line ends")
    return text


def src_files(subdir: str) -> list[str]:
    d = os.path.join(SRC, subdir)
    return sorted(os.path.join(subdir, n) for n in os.listdir(d) if n.endswith(".txt"))


def shingles(text: str, n: int = 5) -> set[str]:
    t = re.sub(r"\s+", " ", text).strip()
    return {t[i:i + n] for i in range(max(1, len(t) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


# ----------------------------------------------------------------------------------------------------
# wiki: samples/src/wiki/*.txt -> MediaWiki XML export -> bz2

SITEINFO = """  <siteinfo>
    <sitename>위키백과</sitename>
    <dbname>kowiki</dbname>
    <base>https://ko.wikipedia.org/wiki/%EC%9C%84%ED%82%A4%EB%B0%B1%EA%B3%BC:%EB%8C%80%EB%AC%B8</base>
    <generator>MediaWiki 1.35.0-wmf.10</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">미디어</namespace>
      <namespace key="-1" case="first-letter">특수</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">토론</namespace>
      <namespace key="2" case="first-letter">사용자</namespace>
      <namespace key="3" case="first-letter">사용자토론</namespace>
      <namespace key="4" case="first-letter">위키백과</namespace>
      <namespace key="5" case="first-letter">위키백과토론</namespace>
      <namespace key="6" case="first-letter">파일</namespace>
      <namespace key="7" case="first-letter">파일토론</namespace>
      <namespace key="8" case="first-letter">미디어위키</namespace>
      <namespace key="9" case="first-letter">미디어위키토론</namespace>
      <namespace key="10" case="first-letter">틀</namespace>
      <namespace key="11" case="first-letter">틀토론</namespace>
      <namespace key="12" case="first-letter">도움말</namespace>
      <namespace key="13" case="first-letter">도움말토론</namespace>
      <namespace key="14" case="first-letter">분류</namespace>
      <namespace key="15" case="first-letter">분류토론</namespace>
      <namespace key="100" case="first-letter">포털</namespace>
      <namespace key="101" case="first-letter">포털토론</namespace>
      <namespace key="118" case="first-letter">초안</namespace>
      <namespace key="119" case="first-letter">초안토론</namespace>
      <namespace key="828" case="first-letter">모듈</namespace>
      <namespace key="829" case="first-letter">모듈토론</namespace>
    </namespaces>
  </siteinfo>
"""
MEDIAWIKI_OPEN = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
                  'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                  'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
                  'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="ko">\n')
CONTRIBUTORS = [("한강물결", 41233), ("Sejong2019", 88120), ("바람개비", 130455), ("Namsan", 20761),
                ("책읽는곰", 275310), ("Kimchi-bot", 301122)]
PAGE_HEADER = re.compile(r"^@@page ns=(-?\d+) id=(\d+) title=(.+)$")


@dataclass
class WikiPage:
    ns: int
    id: int
    title: str
    text: str

    @property
    def redirect(self) -> str | None:
        m = re.match(r"#(?:넘겨주기|REDIRECT)\s*\[\[([^\]|#]+)", self.text, re.IGNORECASE)
        return m.group(1).strip() if m else None


def parse_wiki_sources() -> list[WikiPage]:
    pages: list[WikiPage] = []
    for rel in src_files("wiki"):
        cur: WikiPage | None = None
        lines: list[str] = []
        for lineno, line in enumerate(read_src(rel).split("\n"), 1):
            m = PAGE_HEADER.match(line)
            if m:
                if cur:
                    cur.text = "\n".join(lines).strip("\n")
                    pages.append(cur)
                cur, lines = WikiPage(int(m.group(1)), int(m.group(2)), m.group(3).strip(), ""), []
            elif line.startswith("@@"):
                raise ValueError(f"src/{rel}:{lineno}: bad header {line!r}; use '@@page ns=N id=N title=T'")
            elif cur is None:
                if line.strip():
                    raise ValueError(f"src/{rel}:{lineno}: text before the first @@page header")
            else:
                lines.append(line)
        if cur:
            cur.text = "\n".join(lines).strip("\n")
            pages.append(cur)
    ids = [p.id for p in pages]
    if len(set(ids)) != len(ids):
        raise ValueError("wiki sources: duplicate page ids")
    return pages


def sha1_base36(text: str) -> str:
    """MediaWiki's <sha1>: SHA-1 of the wikitext, base 36, zero-padded to 31 digits."""
    n = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits.rjust(31, "0")


def esc(s: str) -> str:
    return xml_escape(s, {'"': "&quot;"})


def build_wiki(pages: list[WikiPage]) -> bytes:
    base = datetime(2019, 12, 1, 0, 0, 0, tzinfo=timezone.utc)
    out = [MEDIAWIKI_OPEN, SITEINFO]
    for k, p in enumerate(pages):
        rev_id = 24_000_000 + p.id * 13 + k
        ts = (base - timedelta(days=(p.id * 7) % 900, seconds=(p.id * 7919) % 86400)).strftime("%Y-%m-%dT%H:%M:%SZ")
        user, uid = CONTRIBUTORS[p.id % len(CONTRIBUTORS)]
        out.append("  <page>\n")
        out.append(f"    <title>{esc(p.title)}</title>\n    <ns>{p.ns}</ns>\n    <id>{p.id}</id>\n")
        if p.redirect:
            out.append(f'    <redirect title="{esc(p.redirect)}" />\n')
        out.append("    <revision>\n")
        out.append(f"      <id>{rev_id}</id>\n      <parentid>{rev_id - 1 - p.id % 5000}</parentid>\n")
        out.append(f"      <timestamp>{ts}</timestamp>\n")
        out.append(f"      <contributor>\n        <username>{esc(user)}</username>\n"
                   f"        <id>{uid}</id>\n      </contributor>\n")
        if k % 3 == 0:
            out.append("      <minor />\n")
        if k % 4 == 1:
            out.append("      <comment>/* 역사 */ 내용 보충, 출처 추가</comment>\n")
        out.append("      <model>wikitext</model>\n      <format>text/x-wiki</format>\n")
        nbytes = len(p.text.encode("utf-8"))
        out.append(f'      <text bytes="{nbytes}" xml:space="preserve">{esc(p.text)}</text>\n')
        out.append(f"      <sha1>{sha1_base36(p.text)}</sha1>\n")
        out.append("    </revision>\n  </page>\n")
    out.append("</mediawiki>\n")
    return "".join(out).encode("utf-8")


def wiki_tally(pages: list[WikiPage]) -> list[str]:
    ns_names = {1: "토론", 2: "사용자", 4: "위키백과", 10: "틀", 14: "분류"}
    arts = [p for p in pages if p.ns == 0 and not p.redirect]
    redirects = [p for p in pages if p.redirect]
    other = [p for p in pages if p.ns != 0]
    disamb = [p for p in arts if "{{동음이의}}" in p.text]
    rows = [f"- {len(pages)} pages: {len(arts)} articles (ns 0, not redirects), "
            f"{len(redirects)} redirects, {len(other)} pages outside ns 0."]
    rows.append("- Redirects (ns 0, `#넘겨주기` + `<redirect title=.../>`; skip): "
                + ", ".join(f"id {p.id} `{p.title}` -> `{p.redirect}`" for p in redirects) + ".")
    rows.append("- Non-article namespaces (skip): "
                + ", ".join(f"id {p.id} ns {p.ns} ({ns_names.get(p.ns, '?')}) `{p.title}`" for p in other) + ".")
    if disamb:
        rows.append("- Disambiguation pages (ns 0, `{{동음이의}}`; mostly a list of links): "
                    + ", ".join(f"id {p.id} `{p.title}`" for p in disamb) + ".")
    short = [p for p in arts if len(re.sub(r"\{\{[^}]*\}\}|\[\[분류:[^\]]*\]\]", "", p.text).strip()) < 120]
    if short:
        rows.append("- Stubs (ns 0, under 120 characters of text once templates/categories are gone): "
                    + ", ".join(f"id {p.id} `{p.title}`" for p in short) + ".")
    feats = {"`{{정보상자`": "{{정보상자", "`<ref>`": "<ref", "wikitable": "{| class=\"wikitable\"",
             "`[[파일:`": "[[파일:", "`&nbsp;`": "&nbsp;", "`<br />`": "<br />", "`<math>`": "<math>"}
    rows.append("- Markup present (pages containing it): " + ", ".join(
        f"{name} {sum(1 for p in arts if pat in p.text)}" for name, pat in feats.items()) + ".")
    return rows


# ----------------------------------------------------------------------------------------------------
# news: samples/src/news/*.txt -> news.jsonl with planted noise

NEWS_HEADER = re.compile(r"^@@news ((?:\w+=\S+ )*)title=(.+)$")
REPORTERS = [("김민수", "minsu.kim"), ("이서연", "seoyeon.lee"), ("박지훈", "jihoon.park"),
             ("최유진", "yujin.choi"), ("정현우", "hyunwoo.jung"), ("강다은", "daeun.kang"),
             ("윤성호", "sungho.yoon"), ("임하늘", "haneul.lim"), ("한동욱", "dongwook.han"),
             ("오수아", "sua.oh"), ("서재원", "jaewon.seo"), ("신예린", "yerin.shin")]
OUTLETS = [("한빛일보", "hanbit"), ("누리뉴스", "nuri"), ("다온경제", "daon"), ("새벽신문", "saebyeok")]
REPEAT = re.compile(r"\{\{REPEAT:(.):(\d+)\}\}")


@dataclass
class NewsItem:
    key: str
    date: str
    section: str
    title: str
    paras: list[str]
    kind: str = ""                      # "" = normal article; short | english | stock (planted by the source)
    noise: list[str] = field(default_factory=list)
    id: str = ""
    text: str = ""
    ascii_json: bool = False


def parse_news_sources() -> list[NewsItem]:
    items: list[NewsItem] = []
    for rel in src_files("news"):
        cur: NewsItem | None = None
        for lineno, line in enumerate(read_src(rel).split("\n"), 1):
            m = NEWS_HEADER.match(line)
            if m:
                attrs = dict(kv.split("=", 1) for kv in m.group(1).split())
                for need in ("key", "date", "section"):
                    if need not in attrs:
                        raise ValueError(f"src/{rel}:{lineno}: header lacks {need}=")
                cur = NewsItem(attrs["key"], attrs["date"], attrs["section"], m.group(2).strip(), [],
                               attrs.get("kind", ""))
                items.append(cur)
            elif line.startswith("@@"):
                raise ValueError(f"src/{rel}:{lineno}: bad header {line!r}")
            elif line.strip():
                if cur is None:
                    raise ValueError(f"src/{rel}:{lineno}: text before the first @@news header")
                cur.paras.append(REPEAT.sub(lambda r: r.group(1) * int(r.group(2)), line.strip()))
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        raise ValueError("news sources: duplicate keys")
    return items


def sprinkle(text: str, ch: str, every: int, start: int, limit: int) -> str:
    """Replace/insert `ch` at every `every`-th space from the `start`-th (at most `limit` times).

    ZWSP is inserted after the space (so the words stay separated); NBSP replaces the space.
    """
    out, n_space, done = [], 0, 0
    for c in text:
        if c == " ":
            n_space += 1
            if n_space >= start and (n_space - start) % every == 0 and done < limit:
                out.append(" " + ZWSP if ch == ZWSP else NBSP)
                done += 1
                continue
        out.append(c)
    return "".join(out)


# Near duplicates: (source key, how). "sentence" edits replace one phrase (the rest is verbatim);
# the Jaccard similarity of 5-character shingles of the bodies is printed in the README tally.
NEAR_SENTENCE = {
    # key: (old phrase, new phrase, title suffix)
    "semiconductor-export": ("전년 같은 달보다 22.3% 줄었다", "전년 같은 달보다 22.4% 감소했다", " (종합)"),
    "rate-cut": ("석 달 만의 추가 인하로", "3개월 만에 다시 금리를 내린 것으로", ""),
    "u20-final": ("수만 명의 시민이 모여", "시민 수만 명이 모여", " (종합2보)"),
}
NEAR_BYLINE = ["jeju-tourism", "national-team-football"]   # same body, another reporter/outlet, date +1 day
NEAR_APPEND = {"typhoon-mitag": "기상청은 태풍이 소멸할 때까지 비상근무 체제를 유지하기로 했다."}
EXACT_DUP = ["fine-dust-season", "forest-fire", "minimum-wage-2020", "year-end-volunteer"]


def decorate(it: NewsItem, i: int, titles: list[str]) -> None:
    """Add the boilerplate lines a scraped article carries (rules on position i, recorded in it.noise)."""
    name, mail = REPORTERS[i % len(REPORTERS)]
    outlet, dom = OUTLETS[i % len(OUTLETS)]
    paras = list(it.paras)
    if i % 9 == 4:          # inline dateline prefix in the lead paragraph
        paras[0] = f"(서울={outlet}) {name} 기자 = " + paras[0]
        it.noise.append("dateline")
    if i % 7 == 2:
        paras.append(f"▶ 관련기사 {titles[(i + 5) % len(titles)]}")
        if i % 2 == 0:
            paras.append(f"▶ 관련기사 {titles[(i + 11) % len(titles)]}")
        it.noise.append("related")
    if i % 9 != 4 and i % 6 != 5:
        paras.append(f"{name} 기자 {mail}@{dom}.example.com")
        it.noise.append("byline")
    c = i % 4
    if c == 0:
        paras.append(f"Copyright ⓒ {outlet}. All rights reserved.")
    elif c == 1:
        paras.append(f"<저작권자 ⓒ {outlet}, 무단 전재 및 재배포 금지>")
    elif c == 2:
        paras.append(f"ⓒ {outlet} 무단전재 및 재배포금지")
    if c != 3:
        it.noise.append("copyright")
    it.text = "\n".join(paras)


def inherit(o: NewsItem, *drop: str) -> list[str]:
    """Noise tags a copy of `o` keeps (its text carries them); copies are never written \\u-escaped."""
    return [t for t in o.noise if t not in drop and t != "ascii-escaped-json"]


def build_news(items: list[NewsItem]) -> tuple[list[NewsItem], list[str]]:
    by_key = {it.key: it for it in items}
    for k in list(NEAR_SENTENCE) + NEAR_BYLINE + list(NEAR_APPEND) + EXACT_DUP:
        if k not in by_key:
            raise ValueError(f"make_samples.py: news key {k!r} is not in samples/src/news/")
    normal = [it for it in items if not it.kind]
    titles = [it.title for it in normal]
    for i, it in enumerate(normal):
        decorate(it, i, titles)
    for it in items:
        if it.kind:
            it.text = "\n".join(it.paras)
            it.noise.append(it.kind)

    # Planted character-level noise, chosen by position among normal articles.
    with_markup = [it for it in normal if re.search(r"[\"&<>]", "\n".join(it.paras))]
    for it in with_markup[:6]:
        it.title, it.text = html.escape(it.title), html.escape(it.text)
        it.noise.append("html-entities")
    for it in normal[10::29][:4]:
        it.text = sprinkle(it.text, ZWSP, 9, 3, 4)
        it.noise.append("zwsp")
    for it in normal[17::31][:4]:
        it.text = sprinkle(it.text, NBSP, 4, 2, 12)
        it.noise.append("nbsp")
    for it in normal[23::27][:4]:
        it.title = unicodedata.normalize("NFD", it.title)
        it.text = unicodedata.normalize("NFD", it.text)
        it.noise.append("nfd")
    normal[40].ascii_json = True
    normal[40].noise.append("ascii-escaped-json")

    # Duplicates, each placed some way after its original.
    out = list(items)
    extra: list[tuple[NewsItem, NewsItem]] = []   # (copy, original)
    for k in EXACT_DUP:
        o = by_key[k]
        extra.append((NewsItem(o.key + "#dup", o.date, o.section, o.title, o.paras, o.kind, ["exact-dup"] + inherit(o),
                               text=o.text), o))
    for k, (old, new, suffix) in NEAR_SENTENCE.items():
        o = by_key[k]
        if old not in o.text:
            raise ValueError(f"near-duplicate {k}: phrase {old!r} not in the article")
        extra.append((NewsItem(o.key + "#near", o.date, o.section, o.title + suffix, o.paras, "",
                               ["near-dup-sentence"] + inherit(o), text=o.text.replace(old, new, 1)), o))
    for k in NEAR_BYLINE:
        o = by_key[k]
        j = REPORTERS.index(next(r for r in REPORTERS if f"{r[0]} 기자" in o.text)) if "byline" in o.noise else 0
        name, mail = REPORTERS[(j + 5) % len(REPORTERS)]
        outlet, dom = OUTLETS[(j + 1) % len(OUTLETS)]
        body = [ln for ln in o.text.split("\n") if not re.search(r"기자 \S+@|ⓒ", ln)]
        body += [f"{name} 기자 {mail}@{dom}.example.com", f"Copyright ⓒ {outlet}. All rights reserved."]
        d = datetime.strptime(o.date, "%Y-%m-%d") + timedelta(days=1)
        extra.append((NewsItem(o.key + "#byline", d.strftime("%Y-%m-%d"), o.section, o.title, o.paras, "",
                               ["near-dup-byline", "byline", "copyright"]
                               + inherit(o, "byline", "copyright"),
                               text="\n".join(body)), o))
    for k, sentence in NEAR_APPEND.items():
        o = by_key[k]
        lines = o.text.split("\n")
        body_end = max(n for n, ln in enumerate(lines) if not re.search(r"기자 \S+@|ⓒ|▶", ln))
        lines[body_end] += " " + sentence
        extra.append((NewsItem(o.key + "#update", o.date, o.section, o.title + " (2보)", o.paras, "",
                               ["near-dup-append"] + inherit(o), text="\n".join(lines)), o))
    for n, (copy, orig) in enumerate(extra):
        pos = out.index(orig) + 9 + (n * 5) % 13
        out.insert(min(pos, len(out)), copy)
    for n, it in enumerate(out, 1):
        it.id = f"n{n:04d}"

    tally: list[str] = []
    kinds: dict[str, list[str]] = {}
    for it in out:
        for tag in it.noise:
            kinds.setdefault(tag, []).append(it.id)
    pairs = {}
    for copy, orig in extra:
        body_o = strip_boilerplate(orig.text)
        body_c = strip_boilerplate(copy.text)
        pairs.setdefault(copy.noise[0], []).append(
            f"{copy.id} ~ {orig.id} (body 5-gram Jaccard {jaccard(body_o, body_c):.2f})")
    desc = {
        "byline": "trailing reporter byline line `이름 기자 name@outlet.example.com`",
        "dateline": "inline dateline prefix `(서울=매체) 이름 기자 = ` at the start of the first paragraph",
        "copyright": "trailing copyright line (`Copyright ⓒ ...`, `<저작권자 ⓒ ..., 무단 전재 및 재배포 금지>` "
                     "or `ⓒ ... 무단전재 및 재배포금지`)",
        "related": "`▶ 관련기사 ...` line(s)",
        "html-entities": "title and text HTML-escaped (`&quot;`, `&amp;`, `&lt;`, `&gt;`, `&#x27;`)",
        "zwsp": "U+200B ZERO WIDTH SPACE inserted after some spaces (4 per item)",
        "nbsp": "U+00A0 NO-BREAK SPACE in place of some spaces (up to 12 per item)",
        "nfd": "title and text in NFD (decomposed conjoining jamo); NFC restores them",
        "ascii-escaped-json": "line written with `\\uXXXX` escapes (ensure_ascii), still valid JSON",
        "short": "too short (under 20 characters of text)",
        "english": "mostly English (Hangul ratio far below 0.3)",
        "stock": "stock-price table: mostly digits and symbols",
        "repeat": "contains `ㅋ` repeated 50 times (cut to max_char_repeat, document kept)",
    }
    for tag in ["short", "english", "stock", "repeat", "html-entities", "nfd", "zwsp", "nbsp",
                "ascii-escaped-json", "dateline", "related", "copyright", "byline"]:
        ids = kinds.get(tag, [])
        if not ids:
            continue
        tally.append(f"- **{tag}** ({len(ids)}): {desc[tag]}: {', '.join(ids)}.")
    tally.append("- **exact-dup** (text, title, date, section identical; only the id differs): "
                 + "; ".join(p.split(" (")[0].replace("~", "==") for p in pairs.get("exact-dup", [])) + ".")
    tally.append("- **near-dup-sentence** (one phrase changed, title may gain a suffix): "
                 + "; ".join(pairs.get("near-dup-sentence", [])) + ".")
    tally.append("- **near-dup-byline** (same body, other reporter/outlet, date +1 day; identical once "
                 "boilerplate lines are dropped): " + "; ".join(pairs.get("near-dup-byline", [])) + ".")
    tally.append("- **near-dup-append** (a later version with one sentence appended, title + `(2보)`): "
                 + "; ".join(pairs.get("near-dup-append", [])) + ".")
    return out, tally


BOILER = re.compile(r"(기자 \S+@\S+|ⓒ|무단 ?전재|^▶)")


def strip_boilerplate(text: str) -> str:
    text = unicodedata.normalize("NFC", html.unescape(text)).replace(ZWSP, "").replace(NBSP, " ")
    text = re.sub(r"^\([^)]*=[^)]*\) \S+ 기자 = ", "", text)
    return "\n".join(ln for ln in text.split("\n") if not BOILER.search(ln))


def news_jsonl(items: list[NewsItem]) -> bytes:
    lines = []
    for it in items:
        obj = {"id": it.id, "title": it.title, "text": it.text, "date": it.date, "section": it.section}
        lines.append(json.dumps(obj, ensure_ascii=it.ascii_json))
    return ("\n".join(lines) + "\n").encode("utf-8")


# ----------------------------------------------------------------------------------------------------
# dialogue and legacy text

def build_dialogue() -> tuple[bytes, int]:
    text = read_src("dialogue.txt")
    docs = [d.strip("\n") for d in re.split(r"\n[ \t]*\n", text) if d.strip()]
    return ("\n\n".join(docs) + "\n").encode("utf-8"), len(docs)


def build_legacy() -> tuple[bytes, int]:
    lines = [ln.strip() for ln in read_src("legacy.txt").split("\n") if ln.strip()]
    try:
        data = "\r\n".join(lines).encode("cp949") + b"\r\n"
    except UnicodeEncodeError as e:
        raise ValueError(f"src/legacy.txt: {e.object[e.start:e.end]!r} has no CP949 code; replace it") from e
    return data, len(lines)


def build_messenger() -> tuple[bytes, int, int]:
    """src/messenger.txt (conversations separated by a blank line, "# topic" then "SPEAKER: text" lines)
    in the NIKL messenger corpus layout: {"id", "metadata", "document": [{"id", "metadata": {"topic",
    "speaker"}, "utterance": [{"id", "form", "original_form", "speaker_id"}]}]}."""
    docs, n_utt = [], 0
    for i, conv in enumerate((c for c in re.split(r"\n[ \t]*\n", read_src("messenger.txt")) if c.strip()), 1):
        did = f"MSRW1900000001.{i}"
        lines = [ln.strip() for ln in conv.strip("\n").split("\n") if ln.strip()]
        topic = lines[0][1:].strip() if lines[0].startswith("#") else ""
        utts, speakers = [], []
        for j, ln in enumerate((ln for ln in lines if not ln.startswith("#")), 1):
            sp, form = (x.strip() for x in ln.split(":", 1))
            if sp not in speakers:
                speakers.append(sp)
            utts.append({"id": f"{did}.{j}", "form": form, "original_form": form, "speaker_id": sp})
        n_utt += len(utts)
        docs.append({"id": did, "metadata": {"topic": topic, "speaker": [{"id": s} for s in speakers]},
                     "utterance": utts})
    obj = {"id": "MSRW1900000001", "metadata": {"title": "샘플 메신저 대화", "creator": "kogpt2-pretrain samples",
                                                "year": "2019"}, "document": docs}
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"), len(docs), n_utt


# ----------------------------------------------------------------------------------------------------

def build() -> tuple[dict[str, bytes], str]:
    pages = parse_wiki_sources()
    wiki_xml = build_wiki(pages)
    news, news_tally = build_news(parse_news_sources())
    dialogue, n_dialogue = build_dialogue()
    legacy, n_legacy = build_legacy()
    messenger, n_conv, n_utt = build_messenger()
    files = {WIKI_OUT: bz2.compress(wiki_xml, 9), NEWS_OUT: news_jsonl(news),
             DIALOGUE_OUT: dialogue, LEGACY_OUT: legacy, MESSENGER_OUT: messenger}
    extra_cp949 = sorted({c for c in legacy.decode("cp949") if "\uac00" <= c <= "\ud7a3"
                          and len(c.encode("euc_kr")) > 2})
    n_art = sum(1 for p in pages if p.ns == 0 and not p.redirect)
    g = [BEGIN, "", "| file | bytes | documents |", "|---|---:|---|"]
    g.append(f"| `corpus/{WIKI_OUT}` | {len(files[WIKI_OUT]):,} ({len(wiki_xml):,} as XML) | "
             f"{len(pages)} pages, {n_art} articles |")
    g.append(f"| `corpus/{NEWS_OUT}` | {len(files[NEWS_OUT]):,} | {len(news)} lines |")
    g.append(f"| `corpus/{DIALOGUE_OUT}` | {len(dialogue):,} | {n_dialogue} blank-line separated documents |")
    g.append(f"| `corpus/{LEGACY_OUT}` | {len(legacy):,} | {n_legacy} lines (one document each) |")
    g.append(f"| `corpus/{MESSENGER_OUT}` | {len(messenger):,} | {n_conv} conversations, {n_utt} utterances |")
    g += ["", "### kowiki-sample-pages-articles.xml.bz2", ""] + wiki_tally(pages)
    g += ["", "### news.jsonl", ""] + news_tally
    g += ["", "### dialogue.txt", "",
          f"- {n_dialogue} documents, UTF-8, LF, separated by one blank line; no planted noise except "
          "informal spelling, emoticons (`ㅋㅋ`, `ㅠㅠ`, `^^`) and a few emoji.",
          "", "### legacy-cp949.txt", "",
          f"- {n_legacy} documents, CP949 bytes, CRLF line ends, no BOM. Contains syllables outside "
          f"KS X 1001 ({', '.join(extra_cp949)}), so decoding as strict `euc-kr` fails and "
          "UTF-8 fails on the first Hangul byte; `cp949` decodes it.",
          "", f"### {MESSENGER_OUT}", "",
          f"- {n_conv} conversations ({n_utt} utterances) in the 모두의 말뭉치 messenger layout; `form` and "
          "`original_form` are equal. For the per-input cleaning steps: runs such as `ㅋㅋㅋㅋㅋㅋ`, `ㅠㅠㅠㅠ` and "
          "`!!!!!!` (repeat normalization), a de-identification placeholder `&name1&` and an example phone "
          "number `010-1234-5678` (PII placeholder).", "", END]
    return files, "\n".join(g)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = ap.parse_args(argv)
    files, block = build()
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README}: needs the markers {BEGIN} and {END}")
    new_readme = readme[:readme.index(BEGIN)] + block + readme[readme.index(END) + len(END):]
    if args.check:
        bad = [n for n, data in files.items()
               if not os.path.exists(os.path.join(OUT, n)) or open(os.path.join(OUT, n), "rb").read() != data]
        if new_readme != readme:
            bad.append("README.md")
        for n in bad:
            print(f"out of date: samples/{'' if n == 'README.md' else 'corpus/'}{n}", file=sys.stderr)
        if bad:
            print("run: python3 samples/make_samples.py", file=sys.stderr)
        return 1 if bad else 0
    os.makedirs(OUT, exist_ok=True)
    for n, data in files.items():
        with open(os.path.join(OUT, n), "wb") as f:
            f.write(data)
        print(f"wrote samples/corpus/{n}: {len(data):,} bytes")
    with open(README, "w", encoding="utf-8") as f:
        f.write(new_readme)
    print("updated samples/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
