"""Registered survival datasets: ``tcga``, ``synthetic-cohort``, ``sksurv-breast``.

Each factory takes the common data parameters (``root``, ``batch_size``, ``eval_batch_size``,
``num_workers``, ``seed``), the fold settings the cross-validation runner fills in (``fold``,
``selection``, ``inner_val_fraction``; see :mod:`interplay.bio.evaluation`) and its own, and returns a
:class:`~interplay.bio.tasks.SurvivalDataModule` serving one fold.

Where files are looked up: an absolute path (or one that exists as given) is used as is; otherwise
``<data.root>/<name>``, then ``<data.root>/bio/<name>``; without ``data.root``,
``$INTERPLAY_DATA/bio/<name>`` (default ``~/.cache/interplay/bio``). So both
``data.root=../shared/data/bio`` and ``INTERPLAY_DATA=../shared/data`` find the shipped BLCA files.

* ``tcga``: MCAT / MOTCat's ``tcga_<study>_all_clean.csv.zip`` (one row per slide), the signatures CSV
  (6 gene groups), ``splits_<study>/splits_{0..4}.csv`` and, for models that read slides, a directory
  of per-slide patch-feature bags (CLAM's ``pt_files/<slide>.pt`` or ``h5_files/<slide>.h5``,
  ``[N, 1024]``). ``h5ad`` swaps the CSV's omics for an AnnData expression matrix (obs = cases).
* ``synthetic-cohort``: :func:`interplay.bio.data.synthetic.write_synthetic_cohort` writes a cohort in
  the same files (CSV + bags + splits + signatures) into ``<data root>/bio/synthetic/`` on first use;
  survival depends on both modalities. No download.
* ``sksurv-breast``: scikit-survival's bundled ``load_breast_cancer`` (198 patients; 76 gene-expression
  probes plus age, size, ER status and grade = 80 features; 51 deaths); times in days are converted to
  months (/ 30.4375). No split files exist, so the 5 folds are drawn stratified on the event (seeded).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interplay.bio.data.base import SurvivalCohort
from interplay.bio.registry import REGISTRY
from interplay.bio.tasks import SurvivalDataModule
from interplay.core.data import data_root
from interplay.core.errors import ConfigError, DataError

__all__ = ["resolve_data_file", "sksurv_breast", "synthetic_cohort", "synthetic_cohort_dir", "tcga"]

PathLike = str | os.PathLike[str]
MONTH_DAYS = 30.4375  # 365.25 / 12


def resolve_data_file(name: PathLike, root: PathLike | None, *, what: str, key: str) -> Path:
    """The file or directory ``name`` under the data root; a missing one raises naming every place tried."""
    candidate = Path(name).expanduser()
    if candidate.is_absolute() or candidate.exists():
        tried = [candidate]
    elif root is not None:
        base = Path(root).expanduser()
        tried = [base / candidate, base / "bio" / candidate]
    else:
        tried = [data_root() / "bio" / candidate]
    for path in tried:
        if path.exists():
            return path
    hint = "set data.root=DIR (the directory holding it)" if root is None else "check data.root"
    raise DataError(f"{what} not found: {' or '.join(str(p) for p in tried)} ({hint}, or give {key}=PATH)")


@functools.lru_cache(maxsize=8)
def _cached_tcga(path: str, mtime_ns: int, fill_omics: str) -> SurvivalCohort:
    from interplay.bio.data.tcga import read_tcga_csv

    # every fold (and selection) of one run reads the same CSV: parse it once per process
    return read_tcga_csv(path, fill_omics=fill_omics)  # type: ignore[arg-type]


def _read_cohort(csv: Path, fill_omics: str, h5ad: Path | None) -> SurvivalCohort:
    cohort = _cached_tcga(str(csv), csv.stat().st_mtime_ns, fill_omics)
    if h5ad is not None:
        from interplay.bio.data.genomics import attach_omics, read_h5ad_omics

        cohort = attach_omics(cohort, read_h5ad_omics(h5ad), what=str(h5ad))
    return cohort


def _fold_module(
    cohort: SurvivalCohort,
    folds: list[tuple[list[str], list[str]]],
    *,
    signatures: dict[str, list[str]] | None,
    bags: Any,
    common: dict[str, Any],
    **settings: Any,
) -> SurvivalDataModule:
    return SurvivalDataModule(cohort, folds, signatures=signatures, bags=bags, **settings, **common)


def _tcga_module(
    csv: Path,
    signatures: Path | None,
    splits: Path,
    bags: Path | None,
    *,
    n_folds: int,
    bag_dim: int,
    fill_omics: str,
    h5ad: Path | None,
    modality: str,
    common: dict[str, Any],
    **settings: Any,
) -> SurvivalDataModule:
    from interplay.bio.data.bags import PatchBags
    from interplay.bio.data.genomics import read_signatures
    from interplay.bio.data.splits import cv_splits

    cohort = _read_cohort(csv, fill_omics, h5ad)
    folds = cv_splits(splits, n_folds=n_folds)
    patch_bags = None
    if modality != "omics":
        if bags is None:
            raise DataError(
                f"{csv.name}: modality '{modality}' reads whole-slide patch features: set data.params.bags "
                "to the directory of per-slide bags (<slide_id>.pt or .h5, [N, 1024], CLAM's pt_files/)"
            )
        patch_bags = PatchBags(bags, dim=bag_dim)
        slides = [s for case in cohort.case_ids for s in cohort.slides.get(case, [])]
        missing = patch_bags.missing(slides)
        if missing:
            raise DataError(
                f"{bags}: {len(missing)} of {len(slides)} slides of {csv.name} have no bag file, "
                f"e.g. {', '.join(missing[:3])}"
            )
    groups = read_signatures(signatures) if signatures is not None else None
    return _fold_module(
        cohort, folds, signatures=groups, bags=patch_bags, common=common, modality=modality, **settings
    )


@REGISTRY.datasets.register(
    "tcga",
    "TCGA cohort (MCAT/MOTCat CSV zip, 6 signature groups, 5-fold split CSVs; optional patch-feature bags)",
)
def tcga(
    root: PathLike | None = None,
    batch_size: int = 1,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    csv: PathLike = "tcga_blca_all_clean.csv.zip",
    signatures: PathLike = "tcga_signatures.csv",
    splits: PathLike = "splits_blca",
    n_folds: int = 5,
    bags: PathLike | None = None,
    bag_dim: int = 1024,
    h5ad: PathLike | None = None,
    fill_omics: str = "error",
    modality: str = "multimodal",
    omics_layout: str = "groups",
    n_bins: int = 4,
    weighted_sample: bool = True,
    fold: int = 0,
    selection: str = "honest",
    inner_val_fraction: float = 0.15,
    split_seed: int = 0,
) -> SurvivalDataModule:
    """One fold of a TCGA study; ``csv`` / ``signatures`` / ``splits`` / ``bags`` resolve under ``root``."""
    needs_signatures = modality != "path" and omics_layout != "all"
    return _tcga_module(
        resolve_data_file(csv, root, what="TCGA CSV", key="data.params.csv"),
        resolve_data_file(signatures, root, what="signatures CSV", key="data.params.signatures")
        if needs_signatures
        else None,
        resolve_data_file(splits, root, what="split directory", key="data.params.splits"),
        resolve_data_file(bags, root, what="patch-feature directory", key="data.params.bags")
        if bags is not None and modality != "omics"
        else None,
        n_folds=n_folds,
        bag_dim=bag_dim,
        fill_omics=fill_omics,
        h5ad=resolve_data_file(h5ad, root, what=".h5ad file", key="data.params.h5ad") if h5ad else None,
        modality=modality,
        omics_layout=omics_layout,
        n_bins=n_bins,
        weighted_sample=weighted_sample,
        fold=fold,
        selection=selection,
        inner_val_fraction=inner_val_fraction,
        split_seed=split_seed,
        common=dict(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed
        ),
    )


def _tcga_download(root: PathLike | None = None) -> str:
    target = Path(root).expanduser() if root is not None else data_root() / "bio"
    return (
        "TCGA survival CSVs, signatures and 5-fold splits ship with MCAT / MOTCat "
        "(https://github.com/mahmoodlab/MCAT: datasets_csv/, splits/5foldcv/); copy them to "
        f"{target}. Patch features: download the diagnostic slides from the GDC portal and extract "
        "[N, 1024] ResNet-50 features with CLAM, then set data.params.bags=<CLAM output>/pt_files"
    )


tcga.download = _tcga_download  # type: ignore[attr-defined]


# -- synthetic cohort ------------------------------------------------------------------------------------
def _synthetic_root(root: PathLike | None) -> Path:
    base = Path(root).expanduser() if root is not None else data_root()
    return base / "bio" / "synthetic"


def synthetic_cohort_dir(
    root: PathLike | None = None,
    n_patients: int = 400,
    n_patches: tuple[int, int] | list[int] = (200, 400),
    dim: int = 1024,
    data_seed: int = 0,
) -> Path:
    """The directory of the synthetic cohort for these parameters, generated on first use."""
    from interplay.bio.data.synthetic import GENERATOR_VERSION, write_synthetic_cohort

    low, high = (int(v) for v in n_patches)
    folder = (
        _synthetic_root(root)
        / f"cohort-v{GENERATOR_VERSION}-n{n_patients}-p{low}-{high}-d{dim}-seed{data_seed}"
    )
    marker = folder / ".complete"  # written last: a folder without it is regenerated
    if not marker.is_file():
        write_synthetic_cohort(folder, n_patients=n_patients, n_patches=(low, high), dim=dim, seed=data_seed)
        marker.write_text("generated\n")
    return folder


@REGISTRY.datasets.register(
    "synthetic-cohort",
    "synthetic TCGA-format cohort: patch bags + omics, hazard from both modalities (generated, no download)",
)
def synthetic_cohort(
    root: PathLike | None = None,
    batch_size: int = 1,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    n_patients: int = 400,
    n_patches: list[int] | None = None,
    dim: int = 1024,
    data_seed: int = 0,
    n_folds: int = 5,
    modality: str = "multimodal",
    omics_layout: str = "groups",
    n_bins: int = 4,
    weighted_sample: bool = True,
    fold: int = 0,
    selection: str = "honest",
    inner_val_fraction: float = 0.15,
    split_seed: int = 0,
) -> SurvivalDataModule:
    """Generates the cohort once (seed ``data_seed``), then reads it as the ``tcga`` dataset does."""
    n_patches = list(n_patches) if n_patches is not None else [200, 400]
    if len(n_patches) != 2 or n_patches[0] < 1 or n_patches[1] < n_patches[0]:
        raise ConfigError(f"data.params.n_patches must be [low, high] with 1 <= low <= high, got {n_patches}")
    from interplay.bio.data.synthetic import SyntheticCohortLayout

    layout = SyntheticCohortLayout(synthetic_cohort_dir(root, n_patients, tuple(n_patches), dim, data_seed))
    return _tcga_module(
        layout.csv,
        layout.signatures if modality != "path" and omics_layout != "all" else None,
        layout.splits,
        layout.features,
        n_folds=n_folds,
        bag_dim=dim,
        fill_omics="error",
        h5ad=None,
        modality=modality,
        omics_layout=omics_layout,
        n_bins=n_bins,
        weighted_sample=weighted_sample,
        fold=fold,
        selection=selection,
        inner_val_fraction=inner_val_fraction,
        split_seed=split_seed,
        common=dict(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed
        ),
    )


synthetic_cohort.download = lambda root=None: synthetic_cohort_dir(root)  # type: ignore[attr-defined]


# -- scikit-survival's breast-cancer set -------------------------------------------------------------------
def breast_cancer_cohort(features: str = "all") -> SurvivalCohort:
    """scikit-survival's ``load_breast_cancer`` as a cohort: ``features='all'`` (80: 76 probes + age,
    size, ER positive, grade 0-2; the 2 unknown grades count as 1) or ``'genes'`` (the 76 probes)."""
    if features not in ("all", "genes"):
        raise ConfigError(f"data.params.features must be 'all' or 'genes', got {features!r}")
    from sksurv.datasets import load_breast_cancer

    table, outcome = load_breast_cancer()
    table = table.copy()
    genes = [c for c in table.columns if c.startswith("X")]
    if features == "genes":
        table = table[genes]
    else:
        table["er"] = (table["er"].astype(str) == "positive").astype(float)
        # two patients have grade "unkown" (sic): they get the middle grade (1) rather than a dropped row
        grades = {
            "well differentiated": 0.0,
            "intermediate": 1.0,
            "poorly differentiated": 2.0,
            "unkown": 1.0,
        }
        grade = table["grade"].astype(str).map(grades)
        if grade.isna().any():
            values = sorted(set(table["grade"].astype(str)) - set(grades))
            raise DataError(f"sksurv-breast: unexpected grade values {values}")
        table["grade"] = grade
        table = table.astype(float)
    case_ids = [f"breast-{i:03d}" for i in range(len(table))]
    table.index = pd.Index(case_ids, name="case_id")
    return SurvivalCohort(
        case_ids=case_ids,
        times=np.asarray(outcome["t.tdm"], dtype=np.float64) / MONTH_DAYS,
        censorship=1.0 - np.asarray(outcome["e.tdm"], dtype=np.float64),
        omics=table,
        source="sksurv-breast (sksurv.datasets.load_breast_cancer)",
    )


def stratified_folds(cohort: SurvivalCohort, n_folds: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n_folds`` (train ids, test ids) pairs, stratified on the event indicator."""
    from sklearn.model_selection import StratifiedKFold

    if int(n_folds) != n_folds or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    splitter = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    ids = np.asarray(cohort.case_ids)
    return [
        (ids[train].tolist(), ids[test].tolist())
        for train, test in splitter.split(np.zeros(len(ids)), cohort.events.astype(int))
    ]


@REGISTRY.datasets.register(
    "sksurv-breast",
    "scikit-survival's breast-cancer gene expression (198 patients, 80 features), 5 stratified folds",
)
def sksurv_breast(
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    features: str = "all",
    n_folds: int = 5,
    n_bins: int = 4,
    weighted_sample: bool = False,
    fold: int = 0,
    selection: str = "honest",
    inner_val_fraction: float = 0.15,
    split_seed: int = 0,
) -> SurvivalDataModule:
    """Omics only (``omics_layout='all'``): SNN and the Cox baselines."""
    cohort = breast_cancer_cohort(features)
    return SurvivalDataModule(
        cohort,
        stratified_folds(cohort, n_folds, split_seed),
        fold=fold,
        selection=selection,
        inner_val_fraction=inner_val_fraction,
        omics_layout="all",
        modality="omics",
        n_bins=n_bins,
        weighted_sample=weighted_sample,
        split_seed=split_seed,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )
