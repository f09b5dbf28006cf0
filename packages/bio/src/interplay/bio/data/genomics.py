"""Genomic tokens: the omics columns of each functional gene group, standardised on training patients.

MCAT (Chen et al., ICCV 2021, Sec. 3.2 "genomic bags") and MOTCat (Xu & Chen, ICCV 2023, Sec. 3.1)
tokenise a patient's genomics into 6 groups from a signatures CSV (columns: tumour suppressors,
oncogenes, protein kinases, cell differentiation markers, transcription factors, cytokines and
growth factors; rows: gene symbols). Each group's input is every omics column whose gene is in the
group, over the three measurement types: MCAT's ``dataset_survival.py`` builds

    omic = concat(genes + '_mut', genes + '_cnv', genes + '_rnaseq')
    omic_names[g] = sorted(set(omic) & set(genomic_feature_columns))

i.e. the matching column names in sorted (lexicographic) order, which :class:`GenomicGroups`
reproduces. Each group feeds one SNN encoder whose input size is ``sizes[g]``.

Standardisation (``sklearn.preprocessing.StandardScaler`` in the reference: mean and population
standard deviation per column, scale 1 for constant columns) is fitted on the TRAINING patients only
and applied to every split. :meth:`GenomicGroups.to_dict` / :meth:`~GenomicGroups.from_dict` store the
fitted selection and statistics in a checkpoint.

AnnData interop: :func:`read_h5ad_omics` reads an ``.h5ad`` (obs = patients, var = features) as an
omics table, :func:`omics_to_anndata` goes the other way and :func:`attach_omics` swaps a cohort's
omics table for one read elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interplay.bio.data.base import SurvivalCohort
from interplay.core.data import atomic_save, require_file
from interplay.core.errors import CheckpointError, DataError

__all__ = [
    "GenomicGroups",
    "attach_omics",
    "omics_to_anndata",
    "read_h5ad_omics",
    "read_signatures",
    "write_h5ad_omics",
]

# MCAT's suffixes, in its order (the order does not matter: the selected names are sorted).
MCAT_SUFFIX_ORDER: tuple[str, ...] = ("_mut", "_cnv", "_rnaseq")


def read_signatures(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Gene groups of a signatures CSV: ``{column name: [gene, ...]}`` in column order.

    Empty cells (the shorter columns are padded) are ignored, names are stripped and a gene listed
    twice in one group is kept once (first occurrence).
    """
    path = require_file(path, "signatures CSV")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise DataError(
            f"{path}: the signatures file is empty, expected one column per gene group"
        ) from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot parse the signatures CSV: {error}") from error
    groups: dict[str, list[str]] = {}
    for column in frame.columns:
        name = str(column).strip()
        if not name or name.startswith("Unnamed: "):
            continue
        genes = [g.strip() for g in frame[column].tolist() if g is not None and str(g).strip()]
        groups[name] = list(dict.fromkeys(genes))
    if not groups:
        raise DataError(f"{path}: no gene-group columns (expected a header row of group names)")
    empty = [g for g, genes in groups.items() if not genes]
    if empty:
        raise DataError(f"{path}: gene group(s) {', '.join(empty)} list no genes")
    return groups


def _select_group(genes: Sequence[str], columns: set[str], suffixes: Sequence[str]) -> list[str]:
    candidates = {f"{gene}{suffix}" for gene in genes for suffix in suffixes}
    return sorted(candidates & columns)


@dataclass
class GenomicGroups:
    """Fitted genomic tokenisation: per-group column lists and per-column train statistics.

    ``feature_columns`` is the sorted union of the groups' columns (the SNN input); ``mean`` and
    ``scale`` are aligned with it. Build one with :meth:`fit` (from gene signatures) or
    :meth:`fit_columns` (from explicit column lists).
    """

    names: list[str]
    columns: list[list[str]]
    feature_columns: list[str]
    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if len(self.names) != len(self.columns):
            raise DataError(
                f"GenomicGroups: {len(self.names)} group names but {len(self.columns)} column lists"
            )
        if self.mean.shape != (len(self.feature_columns),) or self.scale.shape != self.mean.shape:
            raise DataError("GenomicGroups: mean and scale must have one value per feature column")
        known = set(self.feature_columns)
        for name, cols in zip(self.names, self.columns):
            if not cols:
                raise DataError(f"GenomicGroups: gene group {name!r} has no omics columns")
            unknown = [c for c in cols if c not in known]
            if unknown:
                raise DataError(
                    f"GenomicGroups: group {name!r} uses columns without statistics: {unknown[:5]}"
                )
        self._position = {c: i for i, c in enumerate(self.feature_columns)}

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        omics_train: pd.DataFrame,
        signatures: Mapping[str, Sequence[str]],
        suffixes: Sequence[str] = MCAT_SUFFIX_ORDER,
        *,
        standardize: bool = True,
    ) -> GenomicGroups:
        """Select each group's columns by gene name + suffix and fit the statistics on ``omics_train``.

        A signature gene without any column is skipped; a group left with no column at all raises a
        :class:`DataError` naming it. ``omics_train`` must hold the TRAINING patients only.
        """
        if not signatures:
            raise DataError("GenomicGroups.fit: no gene groups given")
        available = {str(c) for c in omics_train.columns}
        names = [str(n) for n in signatures]
        columns = [_select_group(list(map(str, genes)), available, suffixes) for genes in signatures.values()]
        empty = [n for n, cols in zip(names, columns) if not cols]
        if empty:
            raise DataError(
                f"gene group(s) {', '.join(repr(n) for n in empty)} match no omics column (looked for "
                f"<gene>{'/'.join(suffixes)} among {len(available)} columns)"
            )
        return cls._fit(omics_train, names, columns, standardize)

    @classmethod
    def fit_columns(
        cls, omics_train: pd.DataFrame, groups: Mapping[str, Sequence[str]], *, standardize: bool = True
    ) -> GenomicGroups:
        """Like :meth:`fit` with explicit column lists; a column not in ``omics_train`` raises, naming it."""
        names = [str(n) for n in groups]
        columns = [list(map(str, cols)) for cols in groups.values()]
        return cls._fit(omics_train, names, columns, standardize)

    @classmethod
    def _fit(
        cls, omics_train: pd.DataFrame, names: list[str], columns: list[list[str]], standardize: bool
    ) -> GenomicGroups:
        feature_columns = sorted({c for cols in columns for c in cols})
        values = _take(omics_train, feature_columns, "training omics")
        if values.shape[0] == 0:
            raise DataError("GenomicGroups: no training patients to fit the standardisation on")
        if standardize:
            mean = values.mean(axis=0)
            scale = values.std(axis=0)  # population std (ddof=0), as StandardScaler
            scale[scale == 0] = 1.0  # StandardScaler leaves constant columns unscaled
        else:
            mean = np.zeros(len(feature_columns))
            scale = np.ones(len(feature_columns))
        return cls(names, columns, feature_columns, mean, scale)

    # ------------------------------------------------------------------ applying

    @property
    def sizes(self) -> list[int]:
        """Input size of each group's SNN encoder (MCAT's ``omic_sizes``)."""
        return [len(cols) for cols in self.columns]

    @property
    def input_dim(self) -> int:
        """Input size of the single-encoder SNN baseline (:meth:`flat_transform`)."""
        return len(self.feature_columns)

    def flat_transform(self, omics: pd.DataFrame) -> np.ndarray:
        """``[n, input_dim]`` float32: every selected column, standardised with the train statistics."""
        values = _take(omics, self.feature_columns, "omics")
        return ((values - self.mean) / self.scale).astype(np.float32)

    def transform(self, omics: pd.DataFrame) -> list[np.ndarray]:
        """One ``[n, sizes[g]]`` float32 array per group, standardised with the train statistics."""
        flat = self.flat_transform(omics)
        return [flat[:, [self._position[c] for c in cols]] for cols in self.columns]

    # ------------------------------------------------------------------ checkpoints

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats (YAML / JSON / ``torch.save(weights_only=True)`` safe)."""
        return {
            "names": list(self.names),
            "columns": [list(c) for c in self.columns],
            "feature_columns": list(self.feature_columns),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> GenomicGroups:
        missing = [k for k in ("names", "columns", "feature_columns", "mean", "scale") if k not in state]
        if missing:
            raise CheckpointError(f"GenomicGroups state lacks {', '.join(missing)}")
        try:
            return cls(
                names=[str(n) for n in state["names"]],
                columns=[[str(c) for c in cols] for cols in state["columns"]],
                feature_columns=[str(c) for c in state["feature_columns"]],
                mean=np.asarray(state["mean"], dtype=np.float64),
                scale=np.asarray(state["scale"], dtype=np.float64),
            )
        except DataError as error:
            raise CheckpointError(f"invalid GenomicGroups state: {error}") from error


def _take(omics: pd.DataFrame, columns: Sequence[str], what: str) -> np.ndarray:
    """``omics[columns]`` as float64, raising :class:`DataError` for missing columns or values."""
    present = {str(c) for c in omics.columns}
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(
            f"{what}: {len(missing)} gene column(s) are missing: {', '.join(missing[:5])}"
            + ("..." if len(missing) > 5 else "")
        )
    frame = omics.rename(columns=str)[list(columns)]
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{what}: omics columns must be numeric: {error}") from error
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        cases = list(dict.fromkeys(str(frame.index[r]) for r in rows))
        names = list(dict.fromkeys(columns[c] for c in cols))
        raise DataError(
            f"{what}: missing or infinite values in {', '.join(names[:5])} for cases {', '.join(cases[:5])}"
        )
    return values


# --------------------------------------------------------------------------------------- AnnData


def read_h5ad_omics(path: str | os.PathLike[str], *, layer: str | None = None) -> pd.DataFrame:
    """An ``.h5ad`` expression matrix as an omics table: index = ``obs_names`` (patients, str),
    columns = ``var_names``; ``layer`` picks ``adata.layers[layer]`` instead of ``X``.

    Sparse matrices are densified (omics inputs are a few thousand features per patient).
    """
    import anndata

    path = require_file(path, ".h5ad file")
    try:
        adata = anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{path}: cannot read as AnnData (.h5ad): {error}") from error
    if layer is None:
        matrix = adata.X
        if matrix is None:
            raise DataError(f"{path}: the AnnData has no X matrix; pass layer= one of {list(adata.layers)}")
    else:
        if layer not in adata.layers:
            raise DataError(f"{path}: no layer {layer!r} (layers: {', '.join(adata.layers) or 'none'})")
        matrix = adata.layers[layer]
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    values = np.asarray(matrix, dtype=np.float64)
    index = pd.Index([str(o) for o in adata.obs_names], name="case_id")
    if index.has_duplicates:
        raise DataError(f"{path}: duplicate obs names: {', '.join(index[index.duplicated()].unique()[:5])}")
    columns = [str(v) for v in adata.var_names]
    if len(set(columns)) != len(columns):
        dupes = pd.Index(columns)[pd.Index(columns).duplicated()].unique()[:5]
        raise DataError(f"{path}: duplicate var names: {', '.join(dupes)}")
    return pd.DataFrame(values, index=index, columns=columns)


def omics_to_anndata(omics: pd.DataFrame):
    """An omics table (index = patients) as ``anndata.AnnData`` (float32 ``X``, obs/var named)."""
    import anndata

    values = _take(omics, [str(c) for c in omics.columns], "omics")
    # object dtype: anndata (0.12) refuses to write pandas 3's default string arrays to .h5ad
    obs = pd.DataFrame(index=pd.Index([str(i) for i in omics.index], dtype=object))
    var = pd.DataFrame(index=pd.Index([str(c) for c in omics.columns], dtype=object))
    return anndata.AnnData(X=values.astype(np.float32), obs=obs, var=var)


def write_h5ad_omics(omics: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write an omics table as ``.h5ad`` atomically (temp file, then rename)."""
    adata = omics_to_anndata(omics)
    return atomic_save(lambda temp: adata.write_h5ad(temp), path)


def attach_omics(cohort: SurvivalCohort, omics: pd.DataFrame, *, what: str = "omics table") -> SurvivalCohort:
    """A copy of ``cohort`` whose omics table is ``omics`` (rows matched by case id, extra rows dropped).

    Use it to feed an ``.h5ad`` expression matrix (:func:`read_h5ad_omics`) to a cohort read from a
    TCGA CSV. A cohort case missing from ``omics`` raises, naming it.
    """
    index = pd.Index([str(i) for i in omics.index])
    if index.has_duplicates:
        raise DataError(f"{what}: duplicate patient ids: {', '.join(index[index.duplicated()].unique()[:5])}")
    missing = [c for c in cohort.case_ids if c not in set(index)]
    if missing:
        raise DataError(
            f"{what}: {len(missing)} cases of {cohort.source} are missing: {', '.join(missing[:5])}"
        )
    table = omics.copy()
    table.index = index
    table = table.loc[cohort.case_ids]
    table.index.name = "case_id"
    return SurvivalCohort(
        case_ids=list(cohort.case_ids),
        times=cohort.times,
        censorship=cohort.censorship,
        omics=table,
        slides=dict(cohort.slides),
        clinical=cohort.clinical,
        source=cohort.source,
    )
