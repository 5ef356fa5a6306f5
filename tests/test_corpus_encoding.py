"""`encoding: auto` and bad bytes: decided on a large sample, bad bytes dropped (not lines), loud on a mismatch."""
from __future__ import annotations

import logging

from corpus.readers import MAX_ERRORS_PER_KIND, ErrorLog, Segment, detect_encoding, read_segment

LINE = "한국어 문장이 이 줄에 들어 있습니다. 번호 {}\n"


def read(path, **kw):
    errors = ErrorLog()
    docs = list(read_segment(Segment(str(path), "s", format="text", **kw), errors, lambda n: None, 1 << 20, {}))
    return [t for t, _ in docs], errors


def test_one_bad_byte_early_does_not_make_utf8_a_legacy_file(tmp_path):
    lines = [LINE.format(i) for i in range(3000)]          # ~170 KB of UTF-8
    data = "".join(lines).encode()
    bad_at = len("".join(lines[:10]).encode()) + 3         # line 11, after its first character (first 64 KB)
    p = tmp_path / "mostly_utf8.txt"
    p.write_bytes(data[:bad_at] + b"\xff" + data[bad_at:])
    assert detect_encoding(p.read_bytes()[:1 << 16]) == "utf-8"
    texts, errors = read(p, encoding="auto")
    assert texts == [ln.rstrip("\n") for ln in lines]      # every line, the bad byte dropped
    assert errors.counts == {"decode": 1}
    assert errors.entries[0]["line"] == 11 and errors.entries[0]["offset"] == bad_at


def test_legacy_file_still_detected(tmp_path):
    p = tmp_path / "old.txt"
    p.write_bytes("".join(LINE.format(i) for i in range(200)).encode("cp949"))
    assert detect_encoding(p.read_bytes()) == "cp949"
    texts, errors = read(p, encoding="auto")
    assert texts[3] == LINE.format(3).rstrip("\n") and not errors.entries


def test_wrong_encoding_is_said_once_loudly(tmp_path, caplog):
    p = tmp_path / "really_utf8.txt"
    p.write_text("".join(LINE.format(i) for i in range(50)), encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="corpus"):
        texts, errors = read(p, encoding="cp949")
    assert len(texts) == 50
    enc = [e for e in errors.entries if e["kind"] == "encoding"]
    assert len(enc) == 1 and "corpus.inputs[].encoding" in enc[0]["error"]
    loud = [r for r in caplog.records if str(p) in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelno == logging.ERROR
    # a file with a few bad lines is not called the wrong encoding
    q = tmp_path / "few_bad.txt"
    q.write_bytes(b"".join((LINE.format(i).encode() if i % 10 else b"\xff" + LINE.format(i).encode())
                           for i in range(50)))
    texts, errors = read(q, encoding="utf-8")
    assert errors.counts == {"decode": 5}


def test_nul_bytes_dropped_with_offset(tmp_path):
    p = tmp_path / "nul.txt"
    p.write_bytes("첫 줄\n".encode() + "둘째\x00\x00 줄".encode() + b"\n")
    texts, errors = read(p, encoding="utf-8")
    assert texts == ["첫 줄", "둘째 줄"]
    e = errors.entries[0]
    assert e["kind"] == "nul_bytes" and e["line"] == 2 and e["offset"] == len("첫 줄\n둘째".encode())
    assert e["error"].startswith("2 NUL")


def test_capped_error_lists_say_how_many_more(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"".join(b"\xfe" + LINE.format(i).encode() for i in range(MAX_ERRORS_PER_KIND + 7)) +
                  "".join(LINE.format(i) for i in range(200)).encode())
    _, errors = read(p, encoding="utf-8")
    entries, counts = errors.take()
    assert counts == {"decode": MAX_ERRORS_PER_KIND + 7}
    assert len(entries) == MAX_ERRORS_PER_KIND + 1
    assert entries[-1]["more"] == 7 and "7 more 'decode' errors" in entries[-1]["error"]


def test_byte_ranges_agree_on_the_encoding(tmp_path):
    p = tmp_path / "r.txt"
    lines = [LINE.format(i) for i in range(4000)]
    p.write_bytes("".join(lines).encode("cp949"))
    size = p.stat().st_size
    got = []
    for start in range(0, size, 50_000):
        got += read(p, encoding="auto", start=start, end=min(size, start + 50_000))[0]
    assert got == [ln.rstrip("\n") for ln in lines]
