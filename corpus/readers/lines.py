"""Line-based inputs: plain text (a document per line or blank-line separated) and JSONL.

Both read a byte range of an uncompressed file or a k-th share of a compressed one (see
corpus/readers/segment.py). Decoding never drops a line: invalid bytes for the encoding and NUL bytes
are removed from the line, counted and reported with line number and byte offset. When most lines of
a file fail to decode, the file is probably in another encoding: that is reported once, loudly.
"""
from __future__ import annotations

import bisect
import codecs
import itertools
import json
import logging
from typing import Callable, Iterator, Optional

from corpus.readers.base import BLOCK, HEAD, ErrorLog, Segment, get_field

log = logging.getLogger("corpus")

MISMATCH_LINES = 1000      # lines decoded before the "wrong encoding?" check (also done at the end)
MISMATCH_FRACTION = 0.5    # more than this fraction of lines with invalid bytes: wrong encoding

_DROPPED: list[tuple[int, int, str]] = []   # (start, end, reason) of invalid bytes in the last decode


def _drop_invalid(e: UnicodeDecodeError) -> tuple[str, int]:
    _DROPPED.append((e.start, e.end, e.reason))
    return "", e.end


codecs.register_error("corpus_drop_invalid", _drop_invalid)


def align(f, start: int) -> tuple[int, bool]:
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


def iter_lines(stream, offset: int, end: Optional[int], max_line: int, errors: ErrorLog, name: str,
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


class LineDecoder:
    """Decodes blocks of lines with one codec, dropping (and reporting) invalid and NUL bytes only.

    `check_mismatch` (only for the reader that reports file-level errors) reports once, as an error
    log line and an `encoding` error entry, when most lines had invalid bytes."""

    def __init__(self, enc: str, errors: ErrorLog, name: str, check_mismatch: bool, where: str):
        self.enc, self.errors, self.name, self.where = enc, errors, name, where
        self.check = check_mismatch
        self.lines = self.bad_lines = 0

    def decode(self, lines: list[bytes], offs: list[int], lineno: int) -> list[str]:
        enc, name = self.enc, self.name
        _DROPPED.clear()
        out = b"\n".join(lines).decode(enc, "corpus_drop_invalid").split("\n")
        bad: dict[int, list[tuple[int, int, str]]] = {}
        if len(out) != len(lines) or _DROPPED:
            if len(out) == len(lines):
                rel = [o - offs[0] for o in offs]
                for s, e, r in _DROPPED:
                    i = bisect.bisect_right(rel, s) - 1
                    bad.setdefault(i, []).append((s - rel[i], e - rel[i], r))
            else:   # an invalid sequence swallowed a line break: decode line by line
                out, bad = [], {}
                for i, ln in enumerate(lines):
                    _DROPPED.clear()
                    out.append(ln.decode(enc, "corpus_drop_invalid"))
                    if _DROPPED:
                        bad[i] = list(_DROPPED)
            for i, spans in bad.items():
                n = sum(e - s for s, e, _ in spans)
                self.errors.add(name, "decode", f"{n} invalid {enc} byte(s) dropped from the line (first at byte "
                                f"{spans[0][0]}: {spans[0][2]})", line=lineno + i if lineno >= 0 else None,
                                offset=offs[i] + spans[0][0])
        self.lines += len(lines)
        self.bad_lines += len(bad)
        for i, s in enumerate(out):
            if "\x00" in s:
                self.errors.add(name, "nul_bytes", f"{s.count(chr(0))} NUL byte(s) removed from the line",
                                line=lineno + i if lineno >= 0 else None, offset=offs[i] + lines[i].find(b"\x00"))
                out[i] = s.replace("\x00", "")
        if self.check and self.lines >= MISMATCH_LINES:
            self.finish()
        return out

    def finish(self) -> None:
        """The "wrong encoding" check; runs at most once."""
        if not self.check or not self.lines:
            return
        self.check = False
        if self.bad_lines > MISMATCH_FRACTION * self.lines:
            msg = (f"{self.bad_lines} of the first {self.lines} lines are not valid {self.enc} (invalid bytes dropped): "
                   f"the file is probably in another encoding; set corpus.inputs[].encoding for {self.where} "
                   "(utf-8, cp949, ...)")
            log.error("!!! %s: %s", self.where, msg)
            self.errors.add(self.name, "encoding", msg)


def read_text(seg: Segment, stream, start: int, prev_blank: bool, dec: LineDecoder, max_line: int,
              errors: ErrorLog, name: str, tick, lineno0, mine) -> Iterator[tuple[str, str]]:
    """(text, id) per line, or per blank-line separated block (`seg.doc_sep`)."""
    idx = 0
    if seg.doc_sep == "line":
        for lines, offs, ln in iter_lines(stream, start, seg.end, max_line, errors, name, tick, lineno0):
            texts = dec.decode(lines, offs, ln)
            for t, o in zip(texts, offs):
                if mine(idx):
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
    for lines, offs, ln in iter_lines(stream, start, None, max_line, errors, name, tick, lineno0):
        texts = dec.decode(lines, offs, ln)
        for t, o in zip(texts, offs):
            if not t.strip():
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


def read_jsonl(seg: Segment, stream, start: int, dec: LineDecoder, max_line: int, errors: ErrorLog, name: str,
               tick, lineno0, mine) -> Iterator[tuple[str, str]]:
    """(text, id) per JSON line; `seg.text_field` may be nested ("a.b")."""
    idx = 0
    field_ = seg.text_field
    for lines, offs, ln in iter_lines(stream, start, seg.end, max_line, errors, name, tick, lineno0):
        texts = dec.decode(lines, offs, ln)
        for i, (t, o) in enumerate(zip(texts, offs)):
            if not t.strip():
                continue
            if mine(idx):
                lno = ln + i if ln >= 0 else None
                try:
                    rec = json.loads(t)
                except ValueError as e:
                    errors.add(name, "json", f"invalid JSON: {e}", line=lno, offset=o)
                    rec = None
                if rec is not None:
                    text = get_field(rec, field_) if isinstance(rec, dict) else None
                    if isinstance(text, str):
                        yield text.replace("\x00", ""), f"{seg.source}:{name}:{o}"
                    else:
                        errors.add(name, "json_field", f"no string field {field_!r} (corpus.inputs[].text_field)",
                                   line=lno, offset=o)
            idx += 1
