"""Parquet and Arrow files with a text column (Hugging Face datasets on disk: wikimedia/wikipedia ko,
CulturaX ko, HPLT ko, ...), read with pyarrow one row group (Arrow: one record batch) at a time.

`text_field` names the column ("text" by default; "a.b" reaches into a struct column). A `title`
column, when there is one, goes to the document's metadata. Arrow files may be in the IPC file
format or the stream format `datasets.save_to_disk` writes. Shares: with k readers per file, reader i
takes row groups i, i+k, ... Documents are `source:file:rowgroup:row`. A missing column is reported
once with the columns the file has; an unreadable row group is reported and skipped; null or
non-string values are counted (`parquet_value`). Rendered MediaWiki error messages ("인용 오류: ...",
which rendered Wikipedia datasets carry) are removed (corpus/wiki.py strip_render_errors).
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

from corpus.readers.base import ErrorLog, Segment, get_field
from corpus.wiki import strip_render_errors

BATCH_ROWS = 4096   # rows converted to Python at once (bounds memory on huge row groups)


def _groups(path: str):
    """(number of groups, read(i, columns) -> iterator of pyarrow RecordBatch, schema names)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PAR1"):
        pf = pq.ParquetFile(path, memory_map=True)
        return (pf.metadata.num_row_groups,
                lambda i, cols: pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[i], columns=cols),
                pf.schema_arrow.names)
    source = pa.memory_map(path)
    if magic.startswith(b"ARROW1"):
        reader = pa.ipc.open_file(source)
        return (reader.num_record_batches, lambda i, cols: [reader.get_batch(i).select(cols)],
                reader.schema.names)
    batches = list(pa.ipc.open_stream(source))   # stream format: no index, batches are read in order
    names = batches[0].schema.names if batches else []
    return len(batches), (lambda i, cols: [batches[i].select(cols)]), names


def read_parquet(path: str, seg: Segment, name: str, errors: ErrorLog, tick: Callable[[], None],
                 raw=None) -> Iterator[tuple[str, str, dict]]:
    """(text, doc_id, metadata) for the rows of a Parquet/Arrow file (this reader's share of row groups)."""
    import pyarrow as pa

    k, r = seg.stride
    try:
        n, read, names = _groups(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        if r == 0:
            errors.add(name, "parquet", f"not a readable Parquet/Arrow file ({type(e).__name__}: {e})")
        return
    col = seg.text_field if seg.text_field in names else seg.text_field.split(".")[0]
    if col not in names:
        if r == 0:
            errors.add(name, "parquet_field", f"no column {seg.text_field!r} (corpus.inputs[].text_field); the file "
                       f"has {', '.join(names[:20])}")
        return
    cols = [col] + (["title"] if "title" in names and col != "title" else [])
    size = os.path.getsize(path)
    for g in range(r, n, k):
        row = 0
        try:
            for batch in read(g, cols):
                values = batch.column(0).to_pylist()
                titles = batch.column(1).to_pylist() if len(cols) > 1 else None
                for j, v in enumerate(values):
                    if col != seg.text_field:
                        v = get_field({col: v}, seg.text_field)
                    if isinstance(v, str):
                        meta = {"title": titles[j]} if titles is not None and isinstance(titles[j], str) else {}
                        # rendered-text dumps (wikimedia/wikipedia) carry MediaWiki's error messages
                        yield strip_render_errors(v.replace("\x00", "")), f"{seg.source}:{name}:{g}:{row + j}", meta
                    else:
                        errors.add(name, "parquet_value", f"row group {g} row {row + j}: {seg.text_field} is "
                                   f"{type(v).__name__}, not a string; skipped")
                row += len(values)
        except (pa.ArrowException, OSError, ValueError) as e:
            errors.add(name, "parquet", f"row group {g} (after row {row}): {type(e).__name__}: {e}; rest of the "
                       "group skipped")
        if raw is not None:   # progress: the file position stands for the share of groups done
            raw.seek(min(size, size * (g + 1) // max(1, n)))
            tick()
