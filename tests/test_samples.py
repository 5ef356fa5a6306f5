"""The shipped sample corpus (samples/corpus/): formats, and the planted noise samples/README.md lists.

Other tests and the demo rely on the README's tally (e.g. which news ids are exact duplicates), so
these tests read the claims from the README and check each one against the committed files.
"""
import bz2
import importlib.util
import json
import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CORPUS = SAMPLES / "corpus"
MW = "{http://www.mediawiki.org/xml/export-0.10/}"


def load_script():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = mod   # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def readme_section(name: str) -> str:
    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    return text.split(f"### {name}", 1)[1].split("\n### ", 1)[0]


def tally_ids(tag: str) -> list[str]:
    line = next(ln for ln in readme_section("news.jsonl").splitlines() if ln.startswith(f"- **{tag}**"))
    return re.findall(r"n\d{4}", line)


def pairs(tag: str, sep: str) -> list[tuple[str, str]]:
    line = next(ln for ln in readme_section("news.jsonl").splitlines() if ln.startswith(f"- **{tag}**"))
    return re.findall(rf"(n\d{{4}}) {re.escape(sep)} (n\d{{4}})", line)


@pytest.fixture(scope="module")
def news() -> dict:
    lines = (CORPUS / "news.jsonl").read_bytes().decode("utf-8").splitlines()
    objs = [json.loads(ln) for ln in lines]
    assert len({o["id"] for o in objs}) == len(objs)
    return {o["id"]: o for o in objs}


def test_committed_files_match_the_generator():
    assert load_script().main(["--check"]) == 0, "run: python3 samples/make_samples.py"


def test_wiki_dump_is_a_valid_mediawiki_export():
    root = ET.fromstring(bz2.decompress((CORPUS / "kowiki-sample-pages-articles.xml.bz2").read_bytes()))
    assert root.tag == MW + "mediawiki"
    keys = {int(n.get("key")) for n in root.iter(MW + "namespace")}
    assert {0, 1, 2, 6, 10, 14} <= keys
    pages = root.findall(MW + "page")
    articles = 0
    for p in pages:
        text = p.find(f"{MW}revision/{MW}text")
        assert int(text.get("bytes")) == len(text.text.encode("utf-8"))
        assert p.find(f"{MW}revision/{MW}model").text == "wikitext"
        is_redirect = p.find(MW + "redirect") is not None
        assert is_redirect == text.text.startswith("#넘겨주기")
        articles += p.find(MW + "ns").text == "0" and not is_redirect
    summary = readme_section("kowiki-sample-pages-articles.xml.bz2")
    assert f"{len(pages)} pages: {articles} articles" in summary
    assert 60 <= articles <= 80
    assert {p.find(MW + "ns").text for p in pages} >= {"0", "1", "2", "10", "14"}


def test_wikitext_parses_to_plain_korean():
    mw = pytest.importorskip("mwparserfromhell")
    root = ET.fromstring(bz2.decompress((CORPUS / "kowiki-sample-pages-articles.xml.bz2").read_bytes()))
    page = next(p for p in root.findall(MW + "page") if p.find(MW + "title").text == "서울특별시")
    plain = mw.parse(page.find(f"{MW}revision/{MW}text").text).strip_code()
    assert plain.lstrip().startswith("서울특별시(서울特別市)는 대한민국의 수도")
    assert "{{" not in plain and "[[" not in plain


def test_exact_and_near_duplicates(news):
    exact = pairs("exact-dup", "==")
    assert len(exact) >= 3
    for a, b in exact:
        assert {k: v for k, v in news[a].items() if k != "id"} == {k: v for k, v in news[b].items() if k != "id"}
    for tag in ("near-dup-sentence", "near-dup-byline", "near-dup-append"):
        found = pairs(tag, "~")
        assert found, tag
        for a, b in found:
            assert news[a]["text"] != news[b]["text"]


def test_character_noise_is_where_the_readme_says(news):
    for i in tally_ids("nfd"):
        t = news[i]["text"]
        assert unicodedata.normalize("NFC", t) != t and unicodedata.normalize("NFD", t) == t
    for i in tally_ids("zwsp"):
        assert "\u200b" in news[i]["text"]
    for i in tally_ids("nbsp"):
        assert "\u00a0" in news[i]["text"]
    for i in tally_ids("html-entities"):
        assert re.search(r"&(quot|amp|lt|gt|#x27);", news[i]["text"])
    unmarked = [i for i in news if i not in tally_ids("zwsp")]
    assert not any("\u200b" in news[i]["text"] or "\u200b" in news[i]["title"] for i in unmarked)
    lines = (CORPUS / "news.jsonl").read_text(encoding="utf-8").splitlines()
    for i in tally_ids("ascii-escaped-json"):
        line = lines[int(i[1:]) - 1]
        assert line.isascii() and json.loads(line)["id"] == i


def test_junk_items(news):
    def hangul_ratio(t: str) -> float:
        chars = [c for c in unicodedata.normalize("NFC", t) if not c.isspace()]
        return sum("\uac00" <= c <= "\ud7a3" for c in chars) / len(chars)

    shorts = tally_ids("short")
    assert len(shorts) >= 3 and all(len(news[i]["text"]) < 20 for i in shorts)
    (eng,) = tally_ids("english")
    assert hangul_ratio(news[eng]["text"]) < 0.05
    (stock,) = tally_ids("stock")
    t = "".join(news[stock]["text"].split())
    assert sum(not ("\uac00" <= c <= "\ud7a3") for c in t) / len(t) > 0.8
    (rep,) = tally_ids("repeat")
    assert "ㅋ" * 50 in news[rep]["text"] and "ㅋ" * 51 not in news[rep]["text"]
    normal = [i for i in news if i not in shorts + [eng, stock]]
    assert min(hangul_ratio(news[i]["text"]) for i in normal) > 0.5


def test_dialogue_and_legacy_encoding():
    dialogue = (CORPUS / "dialogue.txt").read_bytes().decode("utf-8")
    docs = [d for d in dialogue.split("\n\n") if d.strip()]
    assert len(docs) >= 100 and "\r" not in dialogue
    raw = (CORPUS / "legacy-cp949.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("euc-kr")
    text = raw.decode("cp949")
    lines = text.split("\r\n")
    assert lines[-1] == "" and all("\n" not in ln for ln in lines)
    assert f"- {len(lines) - 1} documents, CP949" in readme_section("legacy-cp949.txt")


def test_demo_prompt_has_continuations(news):
    prompt = "2019년 한해를 보내며,"
    assert sum(prompt in o["text"] for o in news.values()) >= 2
    assert (CORPUS / "dialogue.txt").read_text(encoding="utf-8").count(prompt) >= 3
