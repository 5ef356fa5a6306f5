"""Input readers: one module per input family, all streaming, compressed (bz2/gz/zst/xz) or not.

    read_segment(seg, errors, progress, max_line, counts=None, meta=None) -> Iterator[(text, doc_id)]

Modules: base (ErrorLog, Segment, opening files), detect (`format: auto`, `encoding: auto`), lines
(plain text and JSONL), nikl (모두의 말뭉치 JSON), aihub (AI Hub JSON in zips), namuwiki (namuwiki
JSON dumps), parquet (Parquet/Arrow), segment (the entry point); MediaWiki XML dumps are parsed in
corpus/wiki.py.

Bad input never raises: a corrupt compressed stream, XML/JSON error, invalid bytes for the encoding,
NUL bytes, a line longer than the limit, an empty or missing file are recorded in `ErrorLog` (with
file and line, byte offset or record position) and reading goes on with the next record or file.
"""
from corpus.readers.base import (BLOCK, HEAD, MAX_ERRORS_PER_KIND, SNIFF, ErrorLog, Segment,  # noqa: F401
                                 compression_of, get_field, open_stream)
from corpus.readers.detect import detect_encoding, detect_format  # noqa: F401
from corpus.readers.segment import license_notes, read_segment  # noqa: F401
from corpus.wiki import read_wiki_pages, wiki_to_text  # noqa: F401

__all__ = ["BLOCK", "HEAD", "MAX_ERRORS_PER_KIND", "SNIFF", "ErrorLog", "Segment", "compression_of", "get_field",
           "open_stream", "detect_encoding", "detect_format", "read_segment", "license_notes", "read_wiki_pages",
           "wiki_to_text"]
