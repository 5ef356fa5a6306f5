"""Planning the corpus stage: which input files, and how they are cut into units of work.

A unit is a byte range of an uncompressed text/JSONL file (at most MAX_UNIT bytes, so big files
spread over all workers), several small files packed together, or one k-th share of a compressed
file or of a whole-file format (wiki dump, NIKL, namuwiki, AI Hub zip, Parquet: k readers each read
the whole file and keep every k-th document, row group or zip member: such files can only be read
from the start). `fingerprint` says when a saved plan may be reused.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path

from common.config import to_dict
from common.errors import ConfigError
from common.schema import CorpusConfig
from corpus.readers import ErrorLog, Segment, compression_of, detect_format
from corpus.readers.detect import sniff_format

MAX_UNIT = 64 << 20         # bytes of input per unit at most
MIN_UNIT = 1 << 20
MAX_STRIDE = 16             # at most this many readers share one compressed file
PLAN_UNITS = 64             # a corpus is cut into about this many units (independent of the worker count)
_RATIO = {"bz2": 4.5, "gz": 3.0, "zst": 3.5, "xz": 5.0}   # rough uncompressed/compressed sizes


def expand_inputs(cc: CorpusConfig, errors: ErrorLog) -> list[tuple[str, dict]]:
    """[(file path, segment fields)] for every input file, sorted within each input spec."""
    out = []
    for spec in cc.inputs:
        p = spec.path
        if os.path.isdir(p):
            files = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and not f.name.startswith("."))
            default_source = os.path.basename(os.path.normpath(p))
        elif any(c in p for c in "*?["):
            files = sorted(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
            default_source = os.path.basename(os.path.dirname(p)) or "input"
        else:
            files = [p]
            default_source = os.path.basename(p).split(".")[0]
        if not files or (len(files) == 1 and not os.path.exists(files[0])):
            errors.add(p, "missing", "no such file, directory or glob match (corpus.inputs[].path)")
            continue
        for f in files:
            # format: auto resolved here, once per file, so the plan (and the manifest's licenses) name it
            fmt = spec.format if spec.format != "auto" else sniff_format(f)
            out.append((f, dict(source=spec.source or default_source, format=fmt, encoding=spec.encoding,
                                text_field=spec.text_field, doc_sep=spec.doc_sep, json_path=spec.json_path,
                                utterance_form=spec.utterance_form, pii=spec.pii,
                                normalize_repeats=spec.normalize_repeats,
                                drop_placeholders=spec.drop_placeholders)))
    return out


def plan_units(files: list[tuple[str, dict]], workers: int) -> list[dict]:
    """Units of work: [{"id", "bytes", "segments": [Segment dict]}] (see module docstring)."""
    total = sum(os.path.getsize(f) for f, _ in files)
    # The plan must not depend on `workers`: units decide the parts, and the parts must be byte-identical
    # for any worker count. total/64 keeps 16 workers busy with ~4 units each.
    target = int(min(MAX_UNIT, max(MIN_UNIT, total / PLAN_UNITS)))
    units: list[dict] = []
    pack: list[dict] = []
    pack_bytes = 0

    def flush() -> None:
        nonlocal pack, pack_bytes
        if pack:
            units.append({"segments": pack, "bytes": pack_bytes})
        pack, pack_bytes = [], 0

    for path, kw in files:
        size = os.path.getsize(path)
        comp = compression_of(path)
        fmt = kw["format"]
        if fmt == "auto" and not comp:
            with open(path, "rb") as f:
                fmt = detect_format(path, f.read(1 << 16))
        if fmt == "aihub" and not kw.get("json_path"):
            raise ConfigError(f"{path} is an AI Hub zip (format: aihub) but its input has no json_path: set "
                              "corpus.inputs[].json_path to where the text is in each JSON, e.g. SJML.text[].content")
        if comp or fmt not in ("text", "jsonl", "auto"):   # whole-file formats: k-th shares
            # k readers each decompress/parse the whole file: shares of ~MAX_UNIT, not of `target`,
            # so a small corpus does not pay for 16 decompressions of its dump
            k = max(1, min(MAX_STRIDE, round(size * _RATIO.get(comp, 1.0) / MAX_UNIT)))
            if k == 1 and size < target:
                pack.append(Segment(path, **kw).to_dict())
                pack_bytes += size
                if pack_bytes >= target:
                    flush()
                continue
            for i in range(k):
                units.append({"segments": [Segment(path, stride=(k, i), **kw).to_dict()], "bytes": size // k})
        elif size <= target:
            pack.append(Segment(path, **kw).to_dict())
            pack_bytes += size
            if pack_bytes >= target:
                flush()
        else:
            flush()
            for start in range(0, size, target):
                units.append({"segments": [Segment(path, start=start, end=min(size, start + target), **kw).to_dict()],
                              "bytes": min(size, start + target) - start})
    flush()
    for i, u in enumerate(units):
        u["id"] = i
    return units


def fingerprint(cc: CorpusConfig, files: list[tuple[str, dict]]) -> str:
    """What a finished unit's output depends on: the corpus config (but not workers) and the files."""
    d = to_dict(cc)
    d.pop("workers", None)
    stats = []
    for f, _ in files:
        st = os.stat(f)
        stats.append([f, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps([d, stats], sort_keys=True).encode()).hexdigest()
