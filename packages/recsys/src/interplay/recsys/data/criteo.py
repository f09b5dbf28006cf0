"""Reader for Criteo display-advertising logs (Kaggle 2014 challenge, Criteo 1TB day files).

Each record has 40 columns in this order: ``label`` (0/1 click), ``I1``-``I13`` (integer counts,
some negative, often missing) and ``C1``-``C26`` (categorical values hashed to 8 hex digits, often
missing). Two layouts are read, detected from the first line:

* the original day files (``day_0`` ... ``day_23``, ``train.txt``): TAB-separated, **no header**;
  ``.gz`` files are read as they are;
* a CSV **with a header** naming the 40 columns (in any order), as in ``criteo_sample.txt``.

A CSV without a header is read too. :func:`read_criteo` yields :class:`pandas.DataFrame` chunks of
``chunksize`` rows with the columns in the canonical order above: ``label`` and ``I*`` as float64
(NaN = missing), ``C*`` as pandas categoricals of text (``""`` = missing); the index holds each
row's line number in the file. A row with another number of columns, or a number column holding text, raises
:class:`~interplay.core.errors.DataError` naming the file and line, e.g.
``day_0:1337: expected 40 columns, got 39`` or ``day_0:1337: column I5 is not numeric: 'abc'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pandas as pd

from interplay.core.data import require_file
from interplay.core.errors import DataError
from interplay.recsys.data._text import first_line, read_delimited, split_header

LABEL = "label"
NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *NUMERIC, *CATEGORICAL)

__all__ = ["CATEGORICAL", "COLUMNS", "LABEL", "NUMERIC", "detect_criteo_format", "read_criteo"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_criteo_format(path: str | os.PathLike[str]) -> tuple[str, list[str] | None]:
    """``(separator, header)`` of a Criteo file; ``header`` is None when the file has none."""
    path = require_file(path, "Criteo file")
    line = first_line(path)
    if not line.strip():
        raise DataError(f"{path}:1: empty first line; expected a Criteo record or a header")
    sep = "\t" if "\t" in line else ","
    fields = split_header(line, sep)
    if _is_number(fields[0]) or fields[0] == "":
        return sep, None
    if sorted(fields) != sorted(COLUMNS):
        missing = [c for c in COLUMNS if c not in fields]
        extra = [c for c in fields if c not in COLUMNS]
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise DataError(
            f"{path}:1: header does not name the 40 Criteo columns label, I1-I13, C1-C26 ({detail})"
        )
    return sep, fields


def read_criteo(path: str | os.PathLike[str], chunksize: int = 100_000) -> Iterator[pd.DataFrame]:
    """Chunks of a Criteo TSV (no header) or CSV (with header) file; see the module docstring.

    The file is checked and its layout detected when this is called; rows are read lazily.
    """
    path = require_file(path, "Criteo file")
    sep, header = detect_criteo_format(path)
    columns = header or list(COLUMNS)
    chunks = read_delimited(
        path,
        sep=sep,
        columns=columns,
        skip_lines=1 if header else 0,
        numeric=(LABEL, *NUMERIC),
        categories=CATEGORICAL,
        chunksize=chunksize,
        quoted=sep != "\t",  # day files never quote; TSV quoting would only slow the count
    )
    return _canonical_order(chunks) if header and list(header) != list(COLUMNS) else chunks


def _canonical_order(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for chunk in chunks:
        ordered = chunk[list(COLUMNS)]
        ordered.attrs = dict(chunk.attrs)
        yield ordered
