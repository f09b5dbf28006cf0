"""Chunked, validated reading of delimited text (TSV / CSV) that knows the file line of every row.

The readers of :mod:`~interplay.recsys.data.criteo` and :mod:`~interplay.recsys.data.fuxictr` share
this machinery. A file is read as raw lines in chunks of ``chunksize`` rows, so memory is bounded by
the chunk whatever the file size. Before parsing, every line's field count is checked; numeric
columns are parsed by pandas' C parser and, only when that fails, re-parsed as text to find the
first offending value. Errors are :class:`~interplay.core.errors.DataError` that read
``"<file>:<line>: <what is wrong>"`` with 1-based line numbers as an editor shows them (a header
line counts). Blank lines are skipped (they keep the numbering right). Each record must sit on one
line: quoted fields may contain the separator but not a line break. ``.gz`` files are read through
:mod:`gzip`.

Every chunk is a :class:`pandas.DataFrame` whose index holds the line numbers and whose
``attrs["source"]`` holds the file name, so later stages (the feature transform) can report
``file:line`` too. Numeric columns come back as ``float64`` (NaN = missing); ``categories`` columns
as pandas categoricals of text (the C parser stores each distinct value once: ~10x less memory than
a Python string per cell, and later stages hash each distinct value once); the others as text. A
missing text value is ``""``.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from interplay.core.errors import DataError

# Text that counts as a missing number (pandas writes NaN as ""; other tools write these).
NA_TOKENS = ("", "nan", "NaN", "NA", "N/A", "null", "NULL", "None")
_BLANK = (b"\n", b"\r\n", b"\r", b"")


def open_binary(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes; ``.gz`` files are decompressed on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def first_line(path: Path) -> str:
    """The first line of ``path`` without its line break (``""`` for an empty file)."""
    try:
        with open_binary(path) as handle:
            raw = handle.readline()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}:1: not UTF-8 text (bad byte at offset {error.start})") from None


def split_header(line: str, sep: str) -> list[str]:
    return [name.strip() for name in next(csv.reader([line], delimiter=sep))]


def _field_counts(lines: list[bytes], sep: str, quoted: bool) -> np.ndarray:
    sep_bytes = sep.encode()
    counts = np.fromiter((line.count(sep_bytes) + 1 for line in lines), dtype=np.int64, count=len(lines))
    if quoted:  # a quoted field may hold the separator: count those lines with the csv module
        for i, line in enumerate(lines):
            if b'"' in line:
                text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                counts[i] = len(next(csv.reader([text], delimiter=sep), []))
    return counts


def _first_bad_numeric(
    path: Path, frame: pd.DataFrame, numeric: Sequence[str], line_numbers: np.ndarray
) -> DataError:
    """The error for the earliest (line, column) whose text is not a finite number."""
    worst: tuple[int, int, str, str] | None = None
    for order, column in enumerate(numeric):
        text = frame[column].astype(str)
        missing = text.isin(NA_TOKENS).to_numpy()
        parsed = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~missing & ~np.isfinite(parsed))
        if bad.size:
            candidate = (int(line_numbers[bad[0]]), order, column, text.iloc[bad[0]])
            if worst is None or candidate[:2] < worst[:2]:
                worst = candidate
    if worst is None:  # pandas refused the chunk for a reason we cannot pin to a value
        return DataError(f"{path}:{line_numbers[0]}-{line_numbers[-1]}: cannot parse the numeric columns")
    line, _, column, value = worst
    return DataError(f"{path}:{line}: column {column} is not numeric: {value!r}")


def _parse_chunk(
    path: Path,
    lines: list[bytes],
    line_numbers: np.ndarray,
    *,
    sep: str,
    columns: Sequence[str],
    numeric: Sequence[str],
    usecols: Sequence[str] | None,
    quoted: bool,
    categories: Sequence[str] = (),
) -> pd.DataFrame:
    counts = _field_counts(lines, sep, quoted)
    wrong = np.flatnonzero(counts != len(columns))
    if wrong.size:
        i = wrong[0]
        raise DataError(f"{path}:{line_numbers[i]}: expected {len(columns)} columns, got {counts[i]}")
    keep = list(usecols) if usecols is not None else list(columns)
    text_columns = [c for c in keep if c not in set(numeric) and c not in set(categories)]
    category_columns = [c for c in keep if c in set(categories) and c not in set(numeric)]
    common = dict(
        sep=sep,
        header=None,
        names=list(columns),
        usecols=keep,
        keep_default_na=False,
        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        skip_blank_lines=False,
        engine="c",
        encoding="utf-8",
    )
    data = b"".join(lines)
    try:
        try:  # fast path: the C parser converts the numeric columns itself
            frame = pd.read_csv(
                io.BytesIO(data),
                dtype={
                    **{c: np.float64 for c in numeric},
                    **{c: object for c in text_columns},
                    **{c: "category" for c in category_columns},
                },
                na_values={c: list(NA_TOKENS) for c in numeric},
                **common,
            )
        except (ValueError, TypeError):
            frame = pd.read_csv(io.BytesIO(data), dtype=object, na_filter=False, **common)
            raise _first_bad_numeric(path, frame, numeric, line_numbers) from None
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}:{line_numbers[0]}-{line_numbers[-1]}: not UTF-8 text (bad byte at offset {error.start})"
        ) from None
    except pd.errors.ParserError as error:  # e.g. an unterminated quote
        raise DataError(f"{path}:{line_numbers[0]}-{line_numbers[-1]}: cannot parse: {error}") from None
    if len(frame) != len(lines):
        raise DataError(
            f"{path}:{line_numbers[0]}-{line_numbers[-1]}: {len(lines)} lines gave {len(frame)} records "
            "(a quoted field spans lines?)"
        )
    for column in numeric:
        values = frame[column].to_numpy()
        bad = np.flatnonzero(np.isinf(values))
        if bad.size:
            line = line_numbers[bad[0]]
            raise DataError(f"{path}:{line}: column {column} is not a finite number: {values[bad[0]]!r}")
    for column in text_columns:
        frame[column] = frame[column].fillna("")
    frame.index = pd.Index(line_numbers, name="line")
    frame.attrs["source"] = str(path)
    return frame


def read_delimited(
    path: str | os.PathLike[str],
    *,
    sep: str,
    columns: Sequence[str],
    skip_lines: int,
    numeric: Sequence[str] = (),
    categories: Sequence[str] = (),
    usecols: Sequence[str] | None = None,
    chunksize: int = 100_000,
    quoted: bool = True,
) -> Iterator[pd.DataFrame]:
    """Chunks of ``path`` (see the module docstring); ``skip_lines`` header lines are skipped."""
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    path = Path(path)
    line_number = skip_lines
    try:
        with open_binary(path) as handle:
            for _ in range(skip_lines):
                handle.readline()
            while True:
                raw = list(itertools.islice(handle, chunksize))
                if not raw:
                    break
                numbers = np.arange(line_number + 1, line_number + 1 + len(raw), dtype=np.int64)
                line_number += len(raw)
                keep = [i for i, line in enumerate(raw) if line not in _BLANK]
                if len(keep) < len(raw):
                    raw = [raw[i] for i in keep]
                    numbers = numbers[keep]
                if not raw:
                    continue
                frame = _parse_chunk(
                    path,
                    raw,
                    numbers,
                    sep=sep,
                    columns=columns,
                    numeric=numeric,
                    categories=categories,
                    usecols=usecols,
                    quoted=quoted,
                )
                del raw  # release this chunk's lines before the next are read
                yield frame
                del frame
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path} (after line {line_number}): {error}") from error
