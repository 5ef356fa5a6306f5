"""모두의 말뭉치 (NIKL, National Institute of Korean Language) JSON files.

One JSON object per file, `{"id", "metadata", "document": [...]}`, often several GB: streamed with
ijson one document at a time, never loaded whole. Two document layouts:

* written (newspaper, written, web corpora): `{"id", "metadata": {"title", "author", "publisher",
  "date", "topic", ...}, "paragraph": [{"id", "form"}, ...]}` -> the paragraphs' `form`s joined by
  newlines (a `"sentence"` list, as in the annotated corpora, is read the same way);
* spoken / messenger: `{"id", "metadata", "utterance": [{"id", "form", "original_form",
  "speaker_id", ...}]}` -> consecutive utterances of one speaker merged into one line (joined by a
  space), a new line at each change of speaker. `utterance_form` picks `form` (the normalized
  transcript) or `original_form` (as said or typed). Transcription marks such as `{laughing}` and the
  unintelligible mark `(())` are removed, `((word))` (an uncertain word) keeps the word.

Document ids are `source:file:document id`; `title`, `date`, `author`, `publisher` and `topic` go to
the document's metadata. A document without text is reported with its id; a JSON syntax error stops
the file (reported with the byte offset and document index where it happened).
"""
from __future__ import annotations

import re
from typing import Callable, Iterator

import ijson

from corpus.readers.base import ErrorLog, Segment

META_KEYS = ("title", "date", "author", "publisher", "topic")
_MARKS = re.compile(r"\{[a-z_ -]+\}|\(\(\)\)")
_UNCERTAIN = re.compile(r"\(\(([^()]*)\)\)")


def _spoken_text(utts: list, form: str) -> str:
    lines: list[str] = []
    cur: list[str] = []
    speaker = object()
    for u in utts:
        if not isinstance(u, dict):
            continue
        t = u.get(form)
        if not isinstance(t, str):
            continue
        t = _UNCERTAIN.sub(r"\1", _MARKS.sub("", t)).strip()
        if not t:
            continue
        sp = u.get("speaker_id")
        if sp != speaker and cur:
            lines.append(" ".join(cur))
            cur = []
        speaker = sp
        cur.append(t)
    if cur:
        lines.append(" ".join(cur))
    return "\n".join(lines)


def nikl_document(doc: dict, form: str) -> tuple[str, dict]:
    """(text, metadata) of one NIKL document (either layout)."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    out = {k: str(meta[k]) for k in META_KEYS if isinstance(meta.get(k), (str, int)) and str(meta[k]).strip()}
    if isinstance(doc.get("utterance"), list):
        return _spoken_text(doc["utterance"], form), out
    paras = doc.get("paragraph") if isinstance(doc.get("paragraph"), list) else doc.get("sentence")
    if not isinstance(paras, list):
        return "", out
    texts = [p["form"].strip() for p in paras if isinstance(p, dict) and isinstance(p.get("form"), str)]
    return "\n".join(t for t in texts if t), out


def read_nikl(stream, seg: Segment, name: str, errors: ErrorLog, tick: Callable[[], None],
              mine: Callable[[int], bool]) -> Iterator[tuple[str, str, dict]]:
    """(text, doc_id, metadata) for the documents of one NIKL JSON file read from `stream`."""
    idx = 0
    try:
        for doc in ijson.items(stream, "document.item"):
            if idx % 64 == 0:
                tick()
            if mine(idx):
                did = str(doc.get("id", idx)) if isinstance(doc, dict) else str(idx)
                text, meta = nikl_document(doc, seg.utterance_form) if isinstance(doc, dict) else ("", {})
                if text:
                    yield text, f"{seg.source}:{name}:{did}", meta
                else:
                    errors.add(name, "nikl_record", f"document {did} (#{idx} in the file) has no "
                               f"paragraph[].form or utterance[].{seg.utterance_form} text; skipped")
            idx += 1
    except (ijson.JSONError, ValueError) as e:   # ijson's IncompleteJSONError is a JSONError
        if mine(0):   # file-level errors: reported by one of the k readers of the file
            errors.add(name, "json", f"JSON error after document #{idx} (near byte {_tell(stream)} of the "
                       f"decompressed data): {e}; rest of the file skipped", offset=_tell(stream))
        return
    if idx == 0 and mine(0):
        errors.add(name, "nikl_record", "no \"document\" list at the top level: not a 모두의 말뭉치 JSON file "
                   "(check corpus.inputs[].format)")


def _tell(stream):
    try:
        return stream.tell()
    except (OSError, ValueError, AttributeError):
        return None
