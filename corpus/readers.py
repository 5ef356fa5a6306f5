"""Input readers: Wikipedia XML dumps, JSONL, plain text; bz2/gz/zst/xz or plain; legacy encodings.

`read_segment(seg, errors, progress)` yields `(text, doc_id)` for one unit of work:
* a byte range of an uncompressed text/JSONL file (a document belongs to the range its first byte
  lies in, so ranges can be read by different processes), or
* every k-th document of a whole file (`stride`), for compressed files and wiki dumps, which can only
  be read from the start: k processes each decompress the file and keep their share.

Bad input never raises: a corrupt compressed stream, XML error, invalid bytes for the encoding, NUL
bytes, a line longer than the limit, an empty or missing file are recorded in `ErrorLog` (with file
and line or byte offset) and reading goes on with the next line or file.

Wiki dumps are parsed page by page in corpus/wiki.py.
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import itertools
import json
import lzma
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import zstandard

from corpus.wiki import read_wiki_pages, wiki_to_text  # noqa: F401  (wiki_to_text: public here too)

BLOCK = 1 << 20            # bytes read per block
HEAD = 1 << 16             # bytes sniffed for format and encoding
MAX_ERRORS_PER_KIND = 20   # per file and error kind, listed in the manifest; the rest only counted

_MAGIC = [(b"BZh", "bz2"), (b"\x1f\x8b", "gz"), (b"\x28\xb5\x2f\xfd", "zst"), (b"\xfd7zXZ\x00", "xz")]
_COMP_EXT = {".bz2": "bz2", ".gz": "gz", ".zst": "zst", ".zstd": "zst", ".xz": "xz"}


# ----------------------------------------------------------------------------------------------------
# errors


@dataclass
class ErrorLog:
    """Bad-input records: the first MAX_ERRORS_PER_KIND per (file, kind) listed, all counted."""

    entries: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)     # kind -> n
    _per: dict = field(default_factory=dict)

    def add(self, file: str, kind: str, msg: str, line: Optional[int] = None, offset: Optional[int] = None) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        key = (file, kind)
        self._per[key] = self._per.get(key, 0) + 1
        if self._per[key] <= MAX_ERRORS_PER_KIND:
            e: dict = {"file": file, "kind": kind}
            if line is not None:
                e["line"] = line
            if offset is not None:
                e["offset"] = offset
            e["error"] = msg
            self.entries.append(e)

    def take(self) -> tuple[list[dict], dict]:
        """Return and clear (entries, counts)."""
        out = (self.entries, self.counts)
        self.entries, self.counts = [], {}
        return out


# ----------------------------------------------------------------------------------------------------
# opening files


def compression_of(path: str) -> str:
    """'bz2' | 'gz' | 'zst' | 'xz' | '' from the magic bytes (extension as fallback)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        head = b""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return _COMP_EXT.get(os.path.splitext(path)[1].lower(), "") if not head else ""


def open_stream(path: str, comp: str) -> tuple[io.RawIOBase, object]:
    """(decompressed binary stream, raw file) for `path`; raw.tell() is the on-disk position."""
    raw = open(path, "rb")
    if comp == "bz2":
        return bz2.BZ2File(raw), raw
    if comp == "gz":
        return gzip.GzipFile(fileobj=raw), raw
    if comp == "zst":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw
    if comp == "xz":
        return lzma.LZMAFile(raw), raw
    return raw, raw


def _base_name(path: str) -> str:
    name = os.path.basename(path)
    root, ext = os.path.splitext(name)
    return root if ext.lower() in _COMP_EXT else name


def detect_format(path: str, head: bytes) -> str:
    """'wiki' | 'jsonl' | 'text' from the (decompressed) file name and first bytes."""
    ext = os.path.splitext(_base_name(path))[1].lower()
    if ext == ".xml":
        return "wiki"
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    s = head.lstrip()[:4096]
    if s.startswith(b"<") and b"<mediawiki" in s:
        return "wiki"
    if s.startswith(b"{"):
        return "jsonl"
    return "text"


def detect_encoding(head: bytes) -> str:
    """Codec name for a file whose first bytes are `head`: UTF-8 if they decode, else charset-normalizer
    restricted to Korean legacy encodings (EUC-KR is read as its superset CP949)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as e:
        if e.start >= len(head) - 3 and e.reason.startswith("unexpected end"):
            return "utf-8"   # a character cut by the end of the sniffed block
    from charset_normalizer import from_bytes

    best = from_bytes(head, cp_isolation=["utf_8", "cp949", "euc_kr", "johab"]).best()
    enc = best.encoding if best is not None else "cp949"
    return "cp949" if enc in ("euc_kr", "cp949", "ks_c_5601_1987") else enc


# ----------------------------------------------------------------------------------------------------
# segments


@dataclass
class Segment:
    """A piece of one input file. start/end: byte range (uncompressed files only); stride (k, i): keep
    documents whose index % k == i (whole file)."""

    path: str
    source: str
    format: str = "auto"
    encoding: str = "auto"
    text_field: str = "text"
    doc_sep: str = "line"
    start: int = 0
    end: Optional[int] = None
    stride: tuple[int, int] = (1, 0)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["stride"] = list(self.stride)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Segment":
        d = dict(d)
        d["stride"] = tuple(d.get("stride", (1, 0)))
        return cls(**d)


class _Prefixed(io.RawIOBase):
    """A stream that returns `head` first, then the rest of `stream` (after sniffing)."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                out, self.head = self.head + self.stream.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.stream.read(n)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _align(f, start: int) -> tuple[int, bool]:
    """First line start at or after `start` in seekable file f, and whether the line before it is blank."""
    if start == 0:
        return 0, True
    back = min(start, HEAD)
    f.seek(start - back)
    pre = f.read(back)
    if pre.endswith(b"\n"):
        i = pre.rfind(b"\n", 0, len(pre) - 1)
        prev = pre[i + 1:-1] if (i >= 0 or back == start) else None
        return start, prev is not None and not prev.strip()
    i = pre.rfind(b"\n")
    head_part = pre[i + 1:] if (i >= 0 or back == start) else None
    f.seek(start)
    rest_len, tail = 0, b""
    while True:
        block = f.read(BLOCK)
        if not block:
            return start + rest_len, False
        j = block.find(b"\n")
        if j >= 0:
            tail = block[:j] if rest_len == 0 else b"x"
            rest_len += j + 1
            break
        rest_len += len(block)
    blank = head_part is not None and not head_part.strip() and not tail.strip()
    return start + rest_len, blank


def _iter_lines(stream, offset: int, end: Optional[int], max_line: int, errors: ErrorLog, name: str,
                tick: Callable[[], None], lineno0: Optional[int]) -> Iterator[tuple[list[bytes], list[int], int]]:
    """Blocks of complete lines from `stream` (positioned at byte `offset` of the decompressed data).

    Yields (lines without "\\n", their start offsets, line number of the first or -1 if unknown).
    Stops after the first line starting at or after `end`. Lines over max_line bytes are skipped
    (streamed past, never held) and recorded.
    """
    carry = b""
    skipping = False
    skip_at = skip_len = 0
    skip_line: Optional[int] = None
    lineno = lineno0 if lineno0 is not None else None
    pos = offset
    while True:
        block = stream.read(BLOCK)
        tick()
        if not block:
            if carry and not skipping and (end is None or pos < end):
                yield [carry], [pos], (lineno if lineno is not None else -1)
            return
        if skipping:
            j = block.find(b"\n")
            if j < 0:
                skip_len += len(block)
                continue
            skip_len += j
            errors.add(name, "line_too_long", f"line of {skip_len} bytes exceeds the limit of {max_line} "
                       "bytes (8 x corpus.filters.max_chars); skipped", line=skip_line, offset=skip_at)
            pos = skip_at + skip_len + 1
            if lineno is not None:
                lineno += 1
            block, skipping = block[j + 1:], False
            if end is not None and pos >= end:
                return
        data = carry + block if carry else block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > max_line:
                skipping, skip_at, skip_len, skip_line, carry = True, pos, len(carry), lineno, b""
            continue
        lines = data[:cut].split(b"\n")
        carry = data[cut + 1:]
        offs = list(itertools.accumulate((len(x) + 1 for x in lines[:-1]), initial=pos))
        if end is not None and offs[-1] >= end:
            k = next(i for i, o in enumerate(offs) if o >= end)
            if k:
                yield lines[:k], offs[:k], (lineno if lineno is not None else -1)
            return
        yield lines, offs, (lineno if lineno is not None else -1)
        pos = offs[-1] + len(lines[-1]) + 1
        if lineno is not None:
            lineno += len(lines)
        if len(carry) > max_line:
            skipping, skip_at, skip_len, skip_line, carry = True, pos, len(carry), lineno, b""


def _decode_lines(lines: list[bytes], offs: list[int], lineno: int, enc: str, errors: ErrorLog,
                  name: str) -> list[Optional[str]]:
    """Decode a block of lines; undecodable lines become None (recorded), NUL bytes are removed."""
    try:
        out: list[Optional[str]] = b"\n".join(lines).decode(enc).split("\n")
        if len(out) != len(lines):  # an encoding whose bytes can contain 0x0A inside a character
            raise UnicodeDecodeError(enc, b"", 0, 1, "line count changed")
    except UnicodeDecodeError:
        out = []
        for i, ln in enumerate(lines):
            try:
                out.append(ln.decode(enc))
            except UnicodeDecodeError as e:
                errors.add(name, "decode", f"invalid {enc} at byte {e.start} of the line ({e.reason}); line skipped",
                           line=lineno + i if lineno >= 0 else None, offset=offs[i] + e.start)
                out.append(None)
    if any("\x00" in s for s in out if s is not None):
        for i, s in enumerate(out):
            if s is not None and "\x00" in s:
                errors.add(name, "nul_bytes", f"{s.count(chr(0))} NUL bytes removed",
                           line=lineno + i if lineno >= 0 else None, offset=offs[i])
                out[i] = s.replace("\x00", "")
    return out


# ----------------------------------------------------------------------------------------------------
# format readers: yield (text, id) ; `mine(i)` says whether document number i belongs to this segment


def _read_text(seg: Segment, stream, start: int, prev_blank: bool, enc: str, max_line: int, errors: ErrorLog,
               name: str, tick, lineno0, mine) -> Iterator[tuple[str, str]]:
    idx = 0
    if seg.doc_sep == "line":
        for lines, offs, ln in _iter_lines(stream, start, seg.end, max_line, errors, name, tick, lineno0):
            texts = _decode_lines(lines, offs, ln, enc, errors, name)
            for t, o in zip(texts, offs):
                if t is not None and mine(idx):
                    yield t, f"{seg.source}:{name}:{o}"
                idx += 1
        return
    # blank-line separated documents; a document belongs to the segment holding its first line
    cur: list[str] = []
    cur_len = 0
    cur_off = -1
    open_doc = in_mine = False
    # lines before the first document start of this range belong to the previous range's document
    started = prev_blank
    for lines, offs, ln in _iter_lines(stream, start, None, max_line, errors, name, tick, lineno0):
        texts = _decode_lines(lines, offs, ln, enc, errors, name)
        for t, o in zip(texts, offs):
            if t is None or not t.strip():
                if open_doc:
                    if in_mine:
                        yield "\n".join(cur), f"{seg.source}:{name}:{cur_off}"
                    idx += 1
                    cur, cur_len, open_doc = [], 0, False
                started = True
                continue
            if not open_doc:
                if not started:
                    continue
                if seg.end is not None and o >= seg.end:
                    return
                cur_off, in_mine, open_doc = o, mine(idx), True
            if in_mine:
                cur_len += len(t)
                if cur_len > max_line:   # megabytes without a blank line: not a document, drop it
                    errors.add(name, "doc_too_long", f"blank-line separated document over {max_line} chars; "
                               "skipped", offset=cur_off)
                    in_mine, cur = False, []
                else:
                    cur.append(t)
    if open_doc and in_mine:
        yield "\n".join(cur), f"{seg.source}:{name}:{cur_off}"


def _read_jsonl(seg: Segment, stream, start: int, enc: str, max_line: int, errors: ErrorLog, name: str,
                tick, lineno0, mine) -> Iterator[tuple[str, str]]:
    idx = 0
    field_ = seg.text_field
    for lines, offs, ln in _iter_lines(stream, start, seg.end, max_line, errors, name, tick, lineno0):
        texts = _decode_lines(lines, offs, ln, enc, errors, name)
        for i, (t, o) in enumerate(zip(texts, offs)):
            if t is None or not t.strip():
                continue
            if mine(idx):
                lno = ln + i if ln >= 0 else None
                try:
                    rec = json.loads(t)
                except ValueError as e:
                    errors.add(name, "json", f"invalid JSON: {e}", line=lno, offset=o)
                    rec = None
                if rec is not None:
                    text = rec.get(field_) if isinstance(rec, dict) else None
                    if isinstance(text, str):
                        yield text.replace("\x00", ""), f"{seg.source}:{name}:{o}"
                    else:
                        errors.add(name, "json_field", f"no string field {field_!r} (corpus.inputs[].text_field)",
                                   line=lno, offset=o)
            idx += 1


# ----------------------------------------------------------------------------------------------------
# entry point


def read_segment(seg: Segment, errors: ErrorLog, progress: Callable[[int], None], max_line: int,
                 counts: Optional[dict] = None) -> Iterator[tuple[str, str]]:
    """Yield (text, doc_id) for the documents of `seg`; never raises on bad input.

    progress(n) is called with on-disk bytes consumed (divided by the stride, so the k readers of a
    file add up to its size). counts collects documents skipped before cleaning (wiki redirects...).
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
        except (OSError, ValueError):
            return
        if seg.end is not None and not comp:
            p = min(p, seg.end)   # reading runs a block past the range's end
        if p > last[0]:
            progress((p - last[0]) // k if k > 1 else p - last[0])
            last[0] = p

    try:
        stream, raw = open_stream(seg.path, comp)
        if seg.start and not comp:
            start, prev_blank = _align(raw, seg.start)
            raw.seek(start)
            head = b""
            last[0] = seg.start
        else:
            start, prev_blank = 0, True
            head = stream.read(HEAD)
            if not head:
                if report_file_errors:
                    errors.add(name, "empty", "empty file")
                return
        sniff = head
        if not sniff:  # a byte range past the start: sniff the file's beginning
            with open(seg.path, "rb") as f:
                sniff = f.read(HEAD)
        fmt = seg.format if seg.format != "auto" else detect_format(seg.path, sniff)
        if fmt == "wiki":
            yield from read_wiki_pages(_Prefixed(head, stream), seg.source, name, errors, tick, mine, counts)
            return
        enc = seg.encoding
        if enc == "auto":
            enc = detect_encoding(sniff)
        elif enc.lower().replace("_", "-") in ("euc-kr", "euckr", "ks-c-5601-1987"):
            enc = "cp949"
        if enc.startswith("utf-16") or enc.startswith("utf-32") or enc.startswith("utf_16"):
            if report_file_errors:
                errors.add(name, "encoding", f"{enc} is not supported: convert the file to UTF-8 (iconv)")
            return
        src = _Prefixed(head, stream) if head else stream
        lineno0 = 1 if start == 0 else None
        if fmt == "jsonl":
            yield from _read_jsonl(seg, src, start, enc, max_line, errors, name, tick, lineno0, mine)
        else:
            yield from _read_text(seg, src, start, prev_blank, enc, max_line, errors, name, tick, lineno0, mine)
    except (OSError, EOFError, zstandard.ZstdError, ET.ParseError, lzma.LZMAError) as e:
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
