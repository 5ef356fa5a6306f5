"""`format: auto` and `encoding: auto`: what a file is, from its name and first bytes.

detect_format(path, head) -> 'wiki' | 'jsonl' | 'text' | 'nikl' | 'namuwiki' | 'aihub' | 'parquet'
detect_encoding(sample) -> a codec name ('utf-8', 'utf-8-sig', 'cp949', ...)

Formats are only told apart where the shape is unambiguous: a zip is an AI Hub archive (the only
format read from zips), Parquet/Arrow by their magic bytes, a MediaWiki export by its root tag, a
모두의 말뭉치 (NIKL) file by a top-level object with `"document": [` holding `"paragraph"` or
`"utterance"` lists, a namuwiki dump by a top-level array of objects with `"namespace"`, `"title"`
and `"text"`. Anything else that looks like JSON is JSONL, the rest plain text. An AI Hub JSON that
is not zipped has no telling shape: name it with `format: aihub`.
"""
from __future__ import annotations

import codecs
import os
import re

from corpus.readers.base import HEAD, base_name, compression_of, open_stream

_NIKL_DOC = re.compile(rb'"document"\s*:\s*\[')
_NIKL_BODY = re.compile(rb'"(?:paragraph|utterance)"\s*:\s*\[')
_NAMU_KEYS = [re.compile(rb'"%s"\s*:' % k) for k in (b"namespace", b"title", b"text")]

# a file is UTF-8 when at least this fraction of its non-ASCII bytes form valid UTF-8 (a CP949 file
# has well under half; a UTF-8 file with a few damaged bytes stays far above)
UTF8_MIN_VALID = 0.9


def detect_format(path: str, head: bytes) -> str:
    """The reader for a file, from its (decompressed) name and first bytes; see the module docstring."""
    name = base_name(path)
    ext = os.path.splitext(name)[1].lower()
    if head.startswith(b"PK\x03\x04") or ext == ".zip":
        return "aihub"
    if head.startswith((b"PAR1", b"ARROW1")) or ext in (".parquet", ".arrow"):
        return "parquet"
    if ext == ".xml":
        return "wiki"
    s = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:HEAD_JSON]
    if s.startswith(b"<") and b"<mediawiki" in s[:4096]:
        return "wiki"
    if s.startswith(b"{") and _NIKL_DOC.search(s) and _NIKL_BODY.search(s):
        return "nikl"
    if s.startswith(b"[") and all(p.search(s) for p in _NAMU_KEYS):
        return "namuwiki"
    if ext in (".jsonl", ".ndjson", ".json") or s.startswith(b"{"):
        return "jsonl"
    return "text"


HEAD_JSON = 1 << 16


def sniff_format(path: str) -> str:
    """detect_format on the file's decompressed first bytes; "auto" if the file cannot be read (the
    reader reports that)."""
    try:
        stream, raw = open_stream(path, compression_of(path))
        try:
            head = stream.read(HEAD)
        finally:
            stream.close()
            raw.close()
    except Exception:   # corrupt stream, unreadable file: left to the reader, which records it
        return "auto"
    return detect_format(path, head)


def utf8_valid_fraction(sample: bytes) -> float:
    """Fraction of the non-ASCII bytes of `sample` that belong to valid UTF-8 sequences (1.0 if none).

    A character cut by the end of the sample counts as valid."""
    high = len(sample) - len(sample.translate(None, bytes(range(128))))
    if not high:
        return 1.0
    bad = errors = 0
    pos = 0
    view = memoryview(sample)
    while True:
        try:
            str(view[pos:], "utf-8")
            break
        except UnicodeDecodeError as e:
            if e.reason.startswith("unexpected end") and pos + e.end >= len(sample):
                break
            bad += e.end - e.start
            pos += e.end
            errors += 1
            if errors >= 256:   # decided: judge on the prefix read so far (a legacy file errs every few bytes)
                head = sample[:pos]
                high = max(1, len(head) - len(head.translate(None, bytes(range(128)))))
                break
    return 1.0 - bad / high


def detect_encoding(sample: bytes) -> str:
    """Codec name for a file whose first bytes (up to SNIFF, 1 MB) are `sample`.

    UTF-8 when at least UTF8_MIN_VALID of its non-ASCII bytes are valid UTF-8 (so one damaged byte
    does not turn a UTF-8 file into CP949), else charset-normalizer restricted to Korean legacy
    encodings (EUC-KR is read as its superset CP949)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if utf8_valid_fraction(sample) >= UTF8_MIN_VALID:
        return "utf-8"
    from charset_normalizer import from_bytes

    best = from_bytes(sample[:HEAD_JSON], cp_isolation=["utf_8", "cp949", "euc_kr", "johab"]).best()
    enc = best.encoding if best is not None else "cp949"
    return "cp949" if enc in ("euc_kr", "cp949", "ks_c_5601_1987", "utf_8") else enc
