"""TCGA-style survival CSV (MCAT / MOTCat ``<study>_all_clean.csv[.zip]``) -> :class:`SurvivalCohort`.

Chen et al., "Multimodal Co-Attention Transformer for Survival Prediction in Gigapixel Whole Slide
Images" (MCAT), ICCV 2021, and Xu & Chen, "Multimodal Optimal Transport-based Co-Attention
Transformer with Global Structure Consistency for Survival Prediction" (MOTCat), ICCV 2023, ship one
CSV per TCGA study with ONE ROW PER SLIDE: ``case_id``, ``slide_id`` (``<barcode>.svs``),
``survival_months``, ``censorship`` (1 = censored), clinical columns (``site``, ``is_female``,
``oncotree_code``, ``age``, ``train``...) and the genomic features ``<GENE>_rnaseq`` (expression
z-scores), ``<GENE>_cnv`` (copy-number calls) and ``<GENE>_mut`` (mutation status). The file is
often a ``.zip`` whose single member has a path such as ``../dataset_csv/tcga_blca_all_clean.csv.zip``.

:func:`read_tcga_csv` groups the slide rows by case (patients with several slides keep all of them,
in file order, as MCAT's ``patient_dict`` does), checks that the per-case values (time, censorship,
every omics column) agree across a case's slides, and returns one row per patient, in the order in
which the cases first appear (MCAT's ``drop_duplicates(['case_id'])``).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from interplay.bio.data.base import SurvivalCohort
from interplay.core.data import require_file
from interplay.core.errors import ConfigError, DataError

__all__ = ["OMICS_SUFFIXES", "REQUIRED_COLUMNS", "omics_columns", "read_tcga_csv"]

#: column suffixes that mark genomic features (MCAT's ``['_mut', '_cnv', '_rnaseq']``)
OMICS_SUFFIXES: tuple[str, ...] = ("_rnaseq", "_cnv", "_mut")
REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "slide_id", "survival_months", "censorship")
_FILL_CHOICES = ("error", "zero", "median")


def omics_columns(columns: Sequence[str], suffixes: Sequence[str] = OMICS_SUFFIXES) -> list[str]:
    """The columns whose name ends with one of ``suffixes``, in their original order."""
    return [c for c in map(str, columns) if c.endswith(tuple(suffixes))]


def _zip_member(path: Path, bundle: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The single CSV member of ``bundle``.

    The MCAT archives name their member ``../dataset_csv/<study>_all_clean.csv.zip`` although it is a
    plain CSV, so a member counts as a CSV when ``.csv`` appears in its file name, not only at its end.
    macOS resource forks (``__MACOSX/``, ``._*``) are ignored.
    """
    files = [
        m
        for m in bundle.infolist()
        if not m.is_dir()
        and "__MACOSX" not in PurePosixPath(m.filename).parts
        and not PurePosixPath(m.filename).name.startswith("._")
    ]
    csvs = [m for m in files if ".csv" in PurePosixPath(m.filename).name.lower()]
    if len(csvs) == 1:
        return csvs[0]
    listing = ", ".join(m.filename for m in files[:10]) or "none"
    if not csvs:
        raise DataError(f"{path}: the zip archive holds no .csv member (members: {listing})")
    raise DataError(
        f"{path}: the zip archive holds {len(csvs)} .csv members, expected one: "
        + ", ".join(m.filename for m in csvs[:10])
    )


def _read_frame(path: Path) -> pd.DataFrame:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as bundle:
                member = _zip_member(path, bundle)
                data = bundle.read(member)
            frame = pd.read_csv(io.BytesIO(data), low_memory=False)
        else:
            frame = pd.read_csv(path, low_memory=False)  # also .csv.gz / .csv.bz2 by suffix
    except DataError:
        raise
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: the file is empty, expected a CSV with a header row") from error
    except (pd.errors.ParserError, UnicodeDecodeError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{path}: cannot parse as a TCGA CSV: {error}") from error
    # The MCAT files start with pandas' unnamed index column.
    return frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed: ")])


def _numeric(frame: pd.DataFrame, columns: Sequence[str], path: Path, what: str) -> pd.DataFrame:
    """``frame[columns]`` as float64; a value that is not a number raises, naming column and case."""
    values = frame[list(columns)]
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        pass
    for column in columns:
        converted = pd.to_numeric(values[column], errors="coerce")
        bad = converted.isna() & values[column].notna()
        if bad.any():
            cases = frame.loc[bad, "case_id"].astype(str).unique()[:5]
            examples = values[column][bad].astype(str).unique()[:3]
            raise DataError(
                f"{path}: {what} column {column!r} holds values that are not numbers "
                f"({', '.join(examples)}) for cases {', '.join(cases)}"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _check_consistent(
    values: np.ndarray,
    codes: np.ndarray,
    first: np.ndarray,
    names: Sequence[str],
    cases: np.ndarray,
    path: Path,
) -> None:
    """Every row must equal the first row of its case (NaN equals NaN)."""
    reference = values[first[codes]]
    same = (values == reference) | (np.isnan(values) & np.isnan(reference))
    if same.all():
        return
    rows, columns = np.nonzero(~same)
    bad_cases = list(dict.fromkeys(str(cases[codes[r]]) for r in rows))
    bad_columns = list(dict.fromkeys(names[c] for c in columns))
    raise DataError(
        f"{path}: the slides of case {bad_cases[0]} disagree on {', '.join(bad_columns[:5])}"
        + (f" ({len(bad_cases)} cases in all: {', '.join(bad_cases[:5])})" if len(bad_cases) > 1 else "")
        + "; every row of a case must carry the same survival and omics values"
    )


def read_tcga_csv(
    path: str | os.PathLike[str],
    *,
    omics_suffixes: Sequence[str] = OMICS_SUFFIXES,
    fill_omics: Literal["error", "zero", "median"] = "error",
) -> SurvivalCohort:
    """Read a TCGA-style survival CSV (plain, compressed, or the single CSV inside a ``.zip``).

    One row per slide in the file becomes one row per case in the cohort: ``slides`` maps each case
    to its slide ids (file order), ``omics`` holds the ``*_rnaseq`` / ``*_cnv`` / ``*_mut`` columns
    (raw values; standardise with :class:`~interplay.bio.data.genomics.GenomicGroups` fitted on the
    training patients), ``clinical`` every other column except the required ones.

    ``fill_omics`` decides what a missing omics value does: ``"error"`` (default) raises a
    :class:`DataError` naming the columns and cases; ``"zero"`` fills 0 (the mean after MCAT-style
    standardisation of a z-scored column); ``"median"`` fills the column median over the whole file,
    which uses the validation patients' values, so prefer ``"zero"`` for leakage-free protocols.
    """
    if fill_omics not in _FILL_CHOICES:
        raise ConfigError(f"fill_omics must be one of {', '.join(_FILL_CHOICES)}, got {fill_omics!r}")
    path = require_file(path, "TCGA CSV")
    frame = _read_frame(path)
    frame.columns = [str(c) for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(expected {', '.join(REQUIRED_COLUMNS)}; found {', '.join(frame.columns[:8])}...)"
        )
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    for column in ("case_id", "slide_id"):
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if blank.any():
            rows = ", ".join(str(i + 2) for i in np.flatnonzero(blank.to_numpy())[:5])
            raise DataError(f"{path}: column {column!r} is empty on line(s) {rows}")
    frame["case_id"] = frame["case_id"].astype(str).str.strip()
    frame["slide_id"] = frame["slide_id"].astype(str).str.strip()
    duplicated = frame["slide_id"].duplicated()
    if duplicated.any():
        dupes = ", ".join(frame.loc[duplicated, "slide_id"].unique()[:5])
        raise DataError(f"{path}: slide_id values appear on more than one row: {dupes}")

    omics_names = omics_columns(frame.columns, omics_suffixes)
    if not omics_names:
        raise DataError(f"{path}: no omics columns (expected columns ending in {', '.join(omics_suffixes)})")
    omics = _numeric(frame, omics_names, path, "omics")
    survival = _numeric(frame, ["survival_months", "censorship"], path, "survival")

    # Cases in order of first appearance; ``first`` is the row of each case's first slide.
    codes, cases = pd.factorize(frame["case_id"], sort=False)
    cases = np.asarray(cases, dtype=object)
    first = np.unique(codes, return_index=True)[1]  # factorize numbers cases by first appearance
    _check_consistent(survival.to_numpy(), codes, first, ["survival_months", "censorship"], cases, path)
    omics_values = omics.to_numpy()
    _check_consistent(omics_values, codes, first, omics_names, cases, path)

    per_case = omics.iloc[first].copy()
    per_case.index = pd.Index([str(c) for c in cases], name="case_id")
    nan = per_case.isna()
    if nan.to_numpy().any():
        if fill_omics == "error":
            bad_columns = nan.columns[nan.any(axis=0)]
            bad_cases = nan.index[nan.any(axis=1)]
            raise DataError(
                f"{path}: missing omics values in {len(bad_columns)} columns "
                f"({', '.join(bad_columns[:5])}) for {len(bad_cases)} cases ({', '.join(bad_cases[:5])}); "
                "pass fill_omics='zero' or 'median' to fill them"
            )
        fill = 0.0 if fill_omics == "zero" else per_case.median(axis=0).fillna(0.0)
        per_case = per_case.fillna(fill)

    slides: dict[str, list[str]] = {str(c): [] for c in cases}
    for case_code, slide in zip(codes, frame["slide_id"].tolist()):
        slides[str(cases[case_code])].append(slide)

    clinical_names = [c for c in frame.columns if c not in REQUIRED_COLUMNS and c not in set(omics_names)]
    clinical = frame.iloc[first][clinical_names].copy() if clinical_names else None
    if clinical is not None:
        clinical.index = per_case.index

    return SurvivalCohort(
        case_ids=list(per_case.index),
        times=survival["survival_months"].to_numpy()[first],
        censorship=survival["censorship"].to_numpy()[first],
        omics=per_case,
        slides=slides,
        clinical=clinical,
        source=str(path),
    )
