"""namuwiki JSON dumps: `[{"namespace", "title", "text", "contributors", ...}, ...]`, namu markup.

The dump is one JSON array of several GB, streamed with ijson one article at a time. Articles of the
main namespace (namespace 0 or "0") are converted with corpus/namu.py; redirects (`#redirect`,
`#넘겨주기`) and other namespaces are skipped and counted under `namu_redirect` / `namu_non_article`.
Document ids are `source:file:title`, the title goes to the document's metadata.

License: namuwiki text is CC BY-NC-SA 2.0 KR (non-commercial, share-alike). The corpus stage's
manifest says so under `licenses` for every source read with this reader (LICENSE_NOTE,
`license_notes` in corpus/readers/segment.py).
"""
from __future__ import annotations

from typing import Callable, Iterator

import ijson

from corpus.namu import namu_to_text
from corpus.readers.base import ErrorLog, Segment

LICENSE_NOTE = ("namuwiki: CC BY-NC-SA 2.0 KR (attribution, non-commercial, share-alike); a model trained on it "
                "and the text derived from it carry these terms")


def _count(counts: dict, key: str, text: str) -> None:
    c = counts.setdefault(key, {"docs": 0, "bytes": 0})
    c["docs"] += 1
    c["bytes"] += len(text.encode("utf-8"))


def read_namuwiki(stream, seg: Segment, name: str, errors: ErrorLog, tick: Callable[[], None],
                  mine: Callable[[int], bool], counts: dict) -> Iterator[tuple[str, str, dict]]:
    """(text, doc_id, {"title"}) for the main-namespace articles of a namuwiki dump read from `stream`."""
    idx = 0
    try:
        for art in ijson.items(stream, "item"):
            if idx % 64 == 0:
                tick()
            if mine(idx):
                yield from _article(art, idx, seg, name, errors, counts)
            idx += 1
    except (ijson.JSONError, ValueError) as e:
        if mine(0):
            errors.add(name, "json", f"JSON error after article #{idx} (near byte {_tell(stream)} of the "
                       f"decompressed data): {e}; rest of the file skipped", offset=_tell(stream))


def _article(art, idx: int, seg: Segment, name: str, errors: ErrorLog, counts: dict):
    if not isinstance(art, dict) or not isinstance(art.get("text"), str):
        errors.add(name, "namu_record", f"article #{idx} has no string \"text\"; skipped")
        return
    text, title = art["text"], str(art.get("title", idx))
    if str(art.get("namespace", "0")).strip() not in ("0", ""):
        _count(counts, "namu_non_article", text)
        return
    if text.lstrip()[:12].lower().startswith(("#redirect", "#넘겨주기")):
        _count(counts, "namu_redirect", text)
        return
    try:
        plain = namu_to_text(text)
    except Exception as e:  # a rule failing on one article must not stop the dump
        errors.add(name, "namu_markup", f"article #{idx} {title!r}: {type(e).__name__}: {e}")
        return
    yield plain, f"{seg.source}:{name}:{title}", {"title": title}


def _tell(stream):
    try:
        return stream.tell()
    except (OSError, ValueError, AttributeError):
        return None
