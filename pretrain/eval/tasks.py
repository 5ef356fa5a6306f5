"""Readers for the downstream tasks of KoGPT2's evaluation table: NSMC sentiment and question pairs.

Layouts (as in ../shared/data, see SOURCES.md there), UTF-8, tab-separated, one header line:

* NSMC (`ratings_train.txt`, `ratings_test.txt`): `id  document  label`, label 1 = positive,
  0 = negative. Fields are NOT quoted: a review may start or end with `"` (a quoted line of dialogue)
  and those quotes are part of the text, so the reader splits on tabs only.
* Question pairs (`train.txt`, `validation.txt`, `test.txt`): `question1  question2  is_duplicate`,
  label 0 = same meaning, 1 = different (the source's convention, kept as is: accuracy does not care).
  This file was written by a CSV writer: a field containing a tab or a quote is wrapped in `"` with
  inner quotes doubled, so the reader uses `csv` with `"` quoting (a handful of train rows need it).

Columns are found by their header names when the header is there (any order); a file without the
header is read positionally in the order above. A malformed row (wrong number of fields, a label
other than 0/1) raises `DataError` naming the file and line. Rows whose text is empty after
stripping are skipped and counted (the original NSMC has a few empty reviews); the count is logged.
"""
from __future__ import annotations

import csv
import logging
import os
import random
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A task data file is missing or malformed; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Example:
    """One classification example: a single text (NSMC) or a pair (question pairs)."""

    text_a: str
    text_b: Optional[str]
    label: int


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's splits live and how its rows are laid out."""

    name: str
    files: dict[str, str]           # split -> file name inside the data dir; no "valid": carved from train
    text_cols: tuple[str, ...]      # header names of the text column(s), in order
    label_col: str
    num_cols: int                   # fields per row
    quoted: bool                    # CSV-style "..." quoting in use
    num_labels: int = 2


TASKS: dict[str, TaskSpec] = {
    "nsmc": TaskSpec("nsmc", {"train": "ratings_train.txt", "test": "ratings_test.txt"},
                     ("document",), "label", 3, quoted=False),
    "paraphrase": TaskSpec("paraphrase", {"train": "train.txt", "valid": "validation.txt", "test": "test.txt"},
                           ("question1", "question2"), "is_duplicate", 3, quoted=True),
}
# Positional column order for files without a header line.
_POSITIONAL = {"nsmc": ("id", "document", "label"), "paraphrase": ("question1", "question2", "is_duplicate")}


def read_task_file(path: str, task: str) -> list[Example]:
    """Read one split file of `task` ("nsmc" | "paraphrase") into examples, in file order."""
    spec = _spec(task)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (the {task} data dir needs {', '.join(spec.files.values())})")
    quoting = csv.QUOTE_MINIMAL if spec.quoted else csv.QUOTE_NONE
    out: list[Example] = []
    empty = 0
    with open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quotechar='"', quoting=quoting, strict=spec.quoted)
        try:
            cols = _POSITIONAL[task]
            first = True
            start_line = 1
            for row in reader:
                line = start_line  # first physical line of this record (a quoted field may span lines)
                start_line = reader.line_num + 1
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if first:
                    first = False
                    names = [c.strip() for c in row]
                    if spec.label_col in names or all(c in names for c in spec.text_cols):
                        missing = [c for c in spec.text_cols + (spec.label_col,) if c not in names]
                        if missing:
                            raise DataError(f"{path}:{line}: header {names} lacks column(s) {missing}; "
                                            f"expected {list(_POSITIONAL[task])}")
                        cols = tuple(names)
                        continue
                if len(row) != len(cols):
                    raise DataError(
                        f"{path}:{line}: expected {len(cols)} tab-separated fields {list(cols)}, got {len(row)}"
                        + ("" if spec.quoted else " (NSMC fields are unquoted: a tab inside a review breaks "
                           "the row; remove it)"))
                rec = dict(zip(cols, row))
                raw_label = rec[spec.label_col].strip()
                if raw_label not in ("0", "1"):
                    raise DataError(f"{path}:{line}: label column {spec.label_col!r} is {raw_label!r}; "
                                    "must be 0 or 1")
                texts = [rec[c].strip() for c in spec.text_cols]
                if not all(texts):
                    empty += 1
                    continue
                out.append(Example(texts[0], texts[1] if len(texts) > 1 else None, int(raw_label)))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: cannot parse the row: {e}") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 ({e}); convert it with iconv -f cp949 -t utf-8") from None
    if empty:
        log.warning("%s: skipped %d rows with empty text", path, empty)
    if not out:
        raise DataError(f"{path}: no examples (an empty file, or only a header)")
    return out


def load_task(task: str, data_dir: str, valid_fraction: float = 0.05, seed: int = 1234
              ) -> dict[str, list[Example]]:
    """The train/valid/test splits of `task` from `data_dir`.

    When the task has no validation file (NSMC), `valid_fraction` of train is held out for early
    stopping by a `seed`ed shuffle (the rest stays in file order); the test split is never touched.
    """
    spec = _spec(task)
    if not os.path.isdir(data_dir):
        raise DataError(f"--data {data_dir}: not a directory; give the {task} folder holding "
                        f"{', '.join(spec.files.values())} (e.g. ../shared/data/"
                        f"{'nsmc' if task == 'nsmc' else 'qpair'})")
    splits = {split: read_task_file(os.path.join(data_dir, name), task) for split, name in spec.files.items()}
    if "valid" not in splits:
        splits["train"], splits["valid"] = split_holdout(splits["train"], valid_fraction, seed)
    return splits


def split_holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(kept, held_out): a seeded random `fraction` of `examples` held out, both in original order."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"valid fraction {fraction}: must be in (0, 1)")
    n_hold = max(1, int(round(len(examples) * fraction)))
    if n_hold >= len(examples):
        raise DataError(f"only {len(examples)} training examples: too few to hold out a validation split")
    held = set(random.Random(seed).sample(range(len(examples)), n_hold))
    kept = [e for i, e in enumerate(examples) if i not in held]
    return kept, [e for i, e in enumerate(examples) if i in held]


def label_counts(examples: list[Example]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for e in examples:
        counts[e.label] = counts.get(e.label, 0) + 1
    return dict(sorted(counts.items()))


def _spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise DataError(f"task {task!r}: use one of {', '.join(TASKS)}")
    return TASKS[task]
