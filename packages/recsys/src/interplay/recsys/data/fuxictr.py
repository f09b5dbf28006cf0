"""Reader for FuxiCTR-style CSV files (``train.csv`` / ``valid.csv`` / ``test.csv`` with a header).

FuxiCTR's ``tiny_csv`` (a Taobao display-ads sample) is the reference: a ``clk`` label, user and item
ids (``userid``, ``adgroup_id``), further categorical and numeric columns and a behaviour sequence
``click_sequence`` of item ids joined by ``^``, oldest first. Any header is accepted; the feature
spec (:mod:`~interplay.recsys.data.features`) says which columns matter and how.

:func:`read_fuxictr_csv` yields :class:`pandas.DataFrame` chunks: ``numeric_columns`` as float64
(NaN = missing), ``categorical_columns`` as pandas categoricals and every other column as text
(``""`` = missing), the index holding line numbers.
Every row must have as many fields as the header; a short or long row, or text in a numeric column,
raises :class:`~interplay.core.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pandas as pd

from interplay.core.data import require_file
from interplay.core.errors import DataError
from interplay.recsys.data._text import first_line, read_delimited, split_header

__all__ = ["read_fuxictr_csv", "read_header"]


def read_header(path: str | os.PathLike[str], sep: str = ",") -> list[str]:
    """Column names from the first line of ``path``."""
    path = require_file(path, "CSV file")
    line = first_line(path)
    if not line.strip():
        raise DataError(f"{path}:1: empty first line; expected a header naming the columns")
    header = split_header(line, sep)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}:1: header names column(s) {', '.join(duplicates)} more than once")
    return header


def read_fuxictr_csv(
    path: str | os.PathLike[str],
    chunksize: int = 100_000,
    numeric_columns: Sequence[str] = (),
    usecols: Sequence[str] | None = None,
    sep: str = ",",
    categorical_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """Chunks of a CSV with a header; ``usecols`` keeps only those columns (less memory).

    ``categorical_columns`` come back as pandas categoricals (each distinct value stored once).

    The header is read and the column names checked when this is called; rows are read lazily.
    """
    path = require_file(path, "CSV file")
    header = read_header(path, sep)
    wanted = list(dict.fromkeys([*(usecols or header), *numeric_columns, *categorical_columns]))
    unknown = [c for c in wanted if c not in header]
    if unknown:
        raise DataError(f"{path}:1: no column(s) {', '.join(unknown)} in the header ({', '.join(header)})")
    return read_delimited(
        path,
        sep=sep,
        columns=header,
        skip_lines=1,
        numeric=list(numeric_columns),
        categories=list(categorical_columns),
        usecols=wanted if usecols is not None else None,
        chunksize=chunksize,
    )
