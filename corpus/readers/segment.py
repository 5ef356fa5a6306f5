"""The readers' entry point: `read_segment` reads one unit of work of any input format.

A segment is a byte range of an uncompressed text/JSONL file (a document belongs to the range its
first byte lies in, so ranges can be read by different processes), or every k-th document (row
group for Parquet, member for a zip) of a whole file (`stride`): compressed files and the whole-file
formats can only be read from the start, so k processes each read the file and keep their share.

The per-input cleaning steps (corpus/input_clean.py: PII placeholders, repeat normalization,
de-identification placeholders) run here, on each document as it is read, because their settings
belong to the input (counts go to `counts`, which the corpus stage adds to the manifest's filters).
"""
from __future__ import annotations

import lzma
import os
import xml.etree.ElementTree as ET
import zipfile
from typing import Callable, Iterator, Optional

import zstandard

from corpus.input_clean import InputCleaner
from corpus.readers.base import SNIFF, ErrorLog, Prefixed, Segment, compression_of, open_stream
from corpus.readers.detect import detect_encoding, detect_format
from corpus.readers.lines import LineDecoder, align, read_jsonl, read_text
from corpus.wiki import read_wiki_pages

LINE_FORMATS = ("text", "jsonl")            # byte ranges possible when uncompressed
ENCYCLOPEDIC = ("wiki", "namuwiki")         # PII scrubbing and repeat normalization off by default


def _resolve_encoding(seg: Segment, sniff: bytes) -> str:
    enc = seg.encoding
    if enc == "auto":
        return detect_encoding(sniff)
    if enc.lower().replace("_", "-") in ("euc-kr", "euckr", "ks-c-5601-1987"):
        return "cp949"
    return enc


def read_segment(seg: Segment, errors: ErrorLog, progress: Callable[[int], None], max_line: int,
                 counts: Optional[dict] = None, meta: Optional[dict] = None) -> Iterator[tuple[str, str]]:
    """Yield (text, doc_id) for the documents of `seg`; never raises on bad input.

    progress(n) is called with on-disk bytes consumed (divided by the stride, so the k readers of a
    file add up to its size). counts collects documents skipped before cleaning (wiki redirects...)
    and the per-input cleaning counts. meta, when given, receives {doc_id: {"title", "date", ...}}
    for the documents whose format carries such fields (NIKL, namuwiki).
    """
    counts = counts if counts is not None else {}
    name = os.path.basename(seg.path)
    k, r = seg.stride
    mine = (lambda i: True) if k == 1 else (lambda i: i % k == r)
    report_file_errors = r == 0   # file-level errors are reported by one of the k readers
    if not os.path.isfile(seg.path):
        if report_file_errors and seg.start == 0:
            errors.add(seg.path, "missing", "file not found (corpus.inputs[].path)")
        return
    comp = compression_of(seg.path)
    stream = raw = None
    last = [seg.start if not comp else 0]

    def tick() -> None:
        try:
            p = raw.tell()
        except (OSError, ValueError, AttributeError):
            return
        if seg.end is not None and not comp:
            p = min(p, seg.end)   # reading runs a block past the range's end
        if p > last[0]:
            progress((p - last[0]) // k if k > 1 else p - last[0])
            last[0] = p

    try:
        stream, raw = open_stream(seg.path, comp)
        if seg.start and not comp:
            start, prev_blank = align(raw, seg.start)
            raw.seek(start)
            head = b""
            last[0] = seg.start
        else:
            start, prev_blank = 0, True
            head = stream.read(SNIFF)   # 1 MB: the encoding is decided on this much (compressed files too)
            if not head:
                if report_file_errors:
                    errors.add(name, "empty", "empty file")
                return
        sniff = head
        if not sniff:  # a byte range past the start: sniff the file's beginning (uncompressed here)
            with open(seg.path, "rb") as f:
                sniff = f.read(SNIFF)
        fmt = seg.format if seg.format != "auto" else detect_format(seg.path, sniff)
        cleaner = InputCleaner.for_input(seg, fmt)
        docs = _read_format(fmt, seg, stream, raw, head, sniff, start, prev_blank, comp, max_line, errors, name,
                            tick, mine, counts, report_file_errors)
        for item in docs:
            text, doc_id = item[0], item[1]
            if meta is not None and len(item) > 2 and item[2]:
                meta[doc_id] = item[2]
            yield (cleaner.apply(text, counts) if cleaner is not None else text), doc_id
    except (OSError, EOFError, zstandard.ZstdError, ET.ParseError, lzma.LZMAError, zipfile.BadZipFile) as e:
        off = None
        try:
            off = raw.tell() if raw is not None else None
        except (OSError, ValueError):
            pass
        kind = "xml" if isinstance(e, ET.ParseError) else "stream"
        where = f" at line {e.position[0]} column {e.position[1]} of the XML" if isinstance(e, ET.ParseError) else ""
        if report_file_errors:
            errors.add(name, kind, f"{type(e).__name__}: {e}{where}; rest of the file skipped", offset=off)
    finally:
        tick()
        for f in (stream, raw):
            try:
                if f is not None:
                    f.close()
            except Exception:
                pass


def _read_format(fmt: str, seg: Segment, stream, raw, head: bytes, sniff: bytes, start: int, prev_blank: bool,
                 comp: str, max_line: int, errors: ErrorLog, name: str, tick, mine, counts: dict,
                 report_file_errors: bool) -> Iterator[tuple]:
    """The documents of one opened file in format `fmt`: (text, id) or (text, id, meta) tuples."""
    src = Prefixed(head, stream) if head else stream
    if fmt == "wiki":
        return read_wiki_pages(src, seg.source, name, errors, tick, mine, counts)
    if fmt == "nikl":
        from corpus.readers.nikl import read_nikl
        return read_nikl(src, seg, name, errors, tick, mine)
    if fmt == "namuwiki":
        from corpus.readers.namuwiki import read_namuwiki
        return read_namuwiki(src, seg, name, errors, tick, mine, counts)
    if fmt == "aihub":
        from corpus.readers.aihub import read_aihub
        is_zip = head.startswith(b"PK\x03\x04")
        return read_aihub(raw if is_zip else src, seg, name, errors, tick, mine, is_zip)
    if fmt == "parquet":
        from corpus.readers.parquet import read_parquet
        return read_parquet(seg.path, seg, name, errors, tick, None if comp else raw)
    enc = _resolve_encoding(seg, sniff)
    if enc.startswith("utf-16") or enc.startswith("utf-32") or enc.startswith("utf_16"):
        if report_file_errors:
            errors.add(name, "encoding", f"{enc} is not supported: convert the file to UTF-8 (iconv)")
        return iter(())
    dec = LineDecoder(enc, errors, name, check_mismatch=report_file_errors and start == 0, where=seg.path)
    lineno0 = 1 if start == 0 else None

    def gen():
        if fmt == "jsonl":
            yield from read_jsonl(seg, src, start, dec, max_line, errors, name, tick, lineno0, mine)
        else:
            yield from read_text(seg, src, start, prev_blank, dec, max_line, errors, name, tick, lineno0, mine)
        dec.finish()
    return gen()


def license_notes(units: list[dict]) -> dict:
    """{source: note} for the sources of a plan whose format carries license terms (namuwiki)."""
    from corpus.readers.namuwiki import LICENSE_NOTE

    out = {}
    for u in units:
        for sd in u["segments"]:
            if sd.get("format") == "namuwiki":
                out[sd["source"]] = LICENSE_NOTE
    return out
