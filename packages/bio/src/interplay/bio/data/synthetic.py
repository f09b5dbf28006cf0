"""A synthetic TCGA-style survival cohort, written in the formats the readers read, with a known hazard.

:func:`write_synthetic_cohort` writes under ``root``:

* ``signatures.csv``: 6 gene groups named as MCAT's (tumour suppressors, oncogenes, ...), gene symbols
  such as ``TSG03`` / ``ONC01``; each group also lists two genes that have no omics column (the
  readers must skip them);
* ``tcga_synthetic_all_clean.csv`` (or ``.csv.zip`` holding one member named like MCAT's
  ``../dataset_csv/<name>.csv.zip``): one row per slide, pandas' index column first, then
  ``case_id, slide_id, site, is_female, oncotree_code, age, survival_months, censorship`` and the
  omics ``<GENE>_rnaseq`` (z-scores with a per-group latent factor), ``<GENE>_cnv`` (integer copy-
  number calls -2..2) and ``<GENE>_mut`` (0/1), plus a few ``XTRA*`` genes that are in no group;
* ``features/<slide stem>.pt``: one ``[N, dim]`` patch-feature tensor per slide (``feature_dtype``,
  float16 by default to halve the bytes; :class:`~interplay.bio.data.bags.PatchBags` returns
  float32); about ``two_slide_fraction`` of the patients have two slides that split their patches;
* ``splits/splits_{0..n_folds-1}.csv``: MCAT-layout folds (index, ``train``, ``val``; the shorter
  column NaN-padded), stratified by event;
* ``truth.csv``: per case the true ``log_hazard`` and its parts, the latent ``tumour_fraction``, the
  uncensored event time, the censoring time and the 4-bin label (edges on the whole cohort);
  ``generator.json``: the planted weights and settings.

The hazard depends on BOTH modalities (Weibull proportional hazards):

    log_hazard = -0.8 * TSG01_rnaseq + 0.8 * ONC01_rnaseq + 0.4 * ONC03_cnv       (omics, 2 groups)
                 + 3.0 * (tumour_fraction - 0.5)                                  (pathology)
                 + N(0, 0.25^2)                                                   (unexplained)
    T = 30 / ln(2)^(1/k) * (E * exp(-log_hazard))^(1/k),  E ~ Exp(1),  k = 1.3   (median 30 months at 0)

Each patch is ``prototype[tumour or stroma] + N(0, I)``: a fraction ``tumour_fraction ~ Beta(2, 2)``
of a patient's patches comes from the "tumour" prototype; the prototypes differ on 64 of the ``dim``
coordinates (by 0.6 each), so the fraction is recoverable from the bag but not from any single
coordinate at a glance. Censoring is independent: ``C ~ scale * Exp(1)`` with ``scale`` found by
bisection so that a fraction ``censoring`` (default 0.45) of the patients is censored; the observed
time is ``min(T, C)`` rounded to 0.01 months (at least 0.01).

The files are written into a staging directory inside ``root`` and moved into place at the end, so a
failure leaves no half-written cohort. Deterministic in ``seed``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from interplay.bio.data.labels import assign_bins, fit_time_bins
from interplay.core.errors import ConfigError

__all__ = ["GENERATOR_VERSION", "SyntheticCohortLayout", "write_synthetic_cohort"]

# Bumped whenever the generator's output changes, so that cached cohorts are not reused.
GENERATOR_VERSION = 1

GROUPS: tuple[tuple[str, str], ...] = (
    ("Tumor Suppressor Genes", "TSG"),
    ("Oncogenes", "ONC"),
    ("Protein Kinases", "KIN"),
    ("Cell Differentiation Markers", "CDM"),
    ("Transcription Factors", "TFC"),
    ("Cytokines and Growth Factors", "CYT"),
)
DEFAULT_GENES_PER_GROUP: tuple[int, ...] = (6, 10, 12, 8, 16, 8)
# Planted omics effects (column -> log-hazard weight); a tumour suppressor's expression protects.
OMICS_WEIGHTS: dict[str, float] = {"TSG01_rnaseq": -0.8, "ONC01_rnaseq": 0.8, "ONC03_cnv": 0.4}
PATH_WEIGHT = 3.0
NOISE_STD = 0.25
WEIBULL_SHAPE = 1.3
BASELINE_MEDIAN_MONTHS = 30.0
PROTOTYPE_DIMS = 64
PROTOTYPE_GAP = 0.6
_EXTRA_GENES = 4  # omics genes that belong to no signature group


@dataclass(frozen=True)
class SyntheticCohortLayout:
    """Where :func:`write_synthetic_cohort` puts each file under ``root``."""

    root: Path
    zipped: bool = False

    @property
    def csv(self) -> Path:
        return self.root / ("tcga_synthetic_all_clean.csv" + (".zip" if self.zipped else ""))

    @property
    def signatures(self) -> Path:
        return self.root / "signatures.csv"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def truth(self) -> Path:
        return self.root / "truth.csv"

    @property
    def meta(self) -> Path:
        return self.root / "generator.json"


def _check_args(n_patients, n_patches, dim, n_bins, n_folds, censoring, two_slide_fraction, genes_per_group):
    if n_patients < max(2 * n_folds, 10):
        raise ConfigError(f"n_patients must be at least max(2 * n_folds, 10), got {n_patients}")
    low, high = n_patches
    if not 2 <= low <= high:
        raise ConfigError(f"n_patches must be (low, high) with 2 <= low <= high, got {n_patches}")
    if dim < PROTOTYPE_DIMS:
        raise ConfigError(f"dim must be at least {PROTOTYPE_DIMS}, got {dim}")
    if n_bins < 1 or n_folds < 2:
        raise ConfigError(f"need n_bins >= 1 and n_folds >= 2, got {n_bins} and {n_folds}")
    if not 0.0 <= censoring < 0.9:
        raise ConfigError(f"censoring must be in [0, 0.9), got {censoring}")
    if not 0.0 <= two_slide_fraction <= 1.0:
        raise ConfigError(f"two_slide_fraction must be in [0, 1], got {two_slide_fraction}")
    if len(genes_per_group) != len(GROUPS) or min(genes_per_group) < 2:
        raise ConfigError(f"genes_per_group needs {len(GROUPS)} counts of at least 2, got {genes_per_group}")


def _censoring_scale(event_times: np.ndarray, unit_draws: np.ndarray, target: float) -> float:
    """Scale ``s`` with ``mean(s * unit_draws < event_times) ~= target`` (bisection on log s)."""
    if target <= 0:
        return np.inf
    low, high = np.log(event_times.min()) - 10, np.log(event_times.max()) + 10
    for _ in range(60):
        middle = 0.5 * (low + high)
        censored = np.mean(np.exp(middle) * unit_draws < event_times)
        low, high = (middle, high) if censored > target else (low, middle)
    return float(np.exp(0.5 * (low + high)))


def write_synthetic_cohort(
    root: str | os.PathLike[str],
    n_patients: int = 400,
    n_patches: tuple[int, int] = (200, 400),
    dim: int = 1024,
    n_bins: int = 4,
    seed: int = 0,
    *,
    n_folds: int = 5,
    censoring: float = 0.45,
    two_slide_fraction: float = 0.15,
    genes_per_group: tuple[int, ...] = DEFAULT_GENES_PER_GROUP,
    feature_dtype: Literal["float16", "float32"] = "float16",
    zipped: bool = False,
) -> Path:
    """Write a synthetic cohort under ``root`` (see the module docstring) and return ``root``.

    :class:`SyntheticCohortLayout` ``(root, zipped)`` names the files. Existing files of a previous
    cohort at the same places are replaced.
    """
    _check_args(n_patients, n_patches, dim, n_bins, n_folds, censoring, two_slide_fraction, genes_per_group)
    if feature_dtype not in ("float16", "float32"):
        raise ConfigError(f"feature_dtype must be 'float16' or 'float32', got {feature_dtype!r}")
    rng = np.random.default_rng(seed)
    layout = SyntheticCohortLayout(Path(root).expanduser(), zipped)
    layout.root.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- genes and signatures
    group_genes = [
        [f"{prefix}{j:02d}" for j in range(1, n + 1)] for (_, prefix), n in zip(GROUPS, genes_per_group)
    ]
    # Listed in the signatures but absent from the omics: the tokeniser must skip them.
    absent = [[f"{prefix}{j:02d}" for j in range(90, 92)] for _, prefix in GROUPS]
    extra = [f"XTRA{j}" for j in range(1, _EXTRA_GENES + 1)]
    signatures = pd.DataFrame(
        {name: pd.Series(genes + gone) for (name, _), genes, gone in zip(GROUPS, group_genes, absent)}
    )

    # ---------------------------------------------------------------- omics
    factors = rng.standard_normal((n_patients, len(GROUPS)))
    omics: dict[str, np.ndarray] = {}
    for g, genes in enumerate(group_genes):
        for j, gene in enumerate(genes):
            expression = 0.6 * factors[:, g] + 0.8 * rng.standard_normal(n_patients)
            omics[f"{gene}_rnaseq"] = np.round(expression, 4)
            if j % 2 == 0:  # every other gene has copy-number calls
                calls = np.clip(np.round(0.9 * rng.standard_normal(n_patients) + 0.3 * factors[:, g]), -2, 2)
                omics[f"{gene}_cnv"] = calls.astype(np.int64)
            if j % 3 == 0:  # every third gene has a mutation status
                omics[f"{gene}_mut"] = (rng.random(n_patients) < 0.1).astype(np.int64)
    for gene in extra:
        omics[f"{gene}_rnaseq"] = np.round(rng.standard_normal(n_patients), 4)
    omics_frame = pd.DataFrame(omics)
    weights = dict(OMICS_WEIGHTS)
    risk_omics = sum(w * omics_frame[c].to_numpy(dtype=np.float64) for c, w in weights.items())

    # ---------------------------------------------------------------- pathology latent and hazard
    tumour_fraction = rng.beta(2.0, 2.0, n_patients)
    risk_path = PATH_WEIGHT * (tumour_fraction - 0.5)
    log_hazard = risk_omics + risk_path + NOISE_STD * rng.standard_normal(n_patients)

    scale = BASELINE_MEDIAN_MONTHS / np.log(2.0) ** (1.0 / WEIBULL_SHAPE)
    event_time = scale * (rng.exponential(1.0, n_patients) * np.exp(-log_hazard)) ** (1.0 / WEIBULL_SHAPE)
    unit_censoring = rng.exponential(1.0, n_patients)
    censoring_time = _censoring_scale(event_time, unit_censoring, censoring) * unit_censoring
    observed = np.maximum(np.round(np.minimum(event_time, censoring_time), 2), 0.01)
    censorship = (censoring_time < event_time).astype(np.int64)

    # ---------------------------------------------------------------- cases, slides, clinical
    case_ids = [f"SYN-{k // 100:02d}-{k:04d}" for k in range(n_patients)]
    two_slides = rng.random(n_patients) < two_slide_fraction
    age = np.round(rng.normal(68, 10, n_patients)).astype(np.int64)
    is_female = (rng.random(n_patients) < 0.3).astype(np.int64)
    sites = np.array(["2F", "4Z", "BT", "DK", "FD"])[rng.integers(0, 5, n_patients)]

    # ---------------------------------------------------------------- patch prototypes
    informative = rng.choice(dim, PROTOTYPE_DIMS, replace=False)
    stroma = rng.normal(0.0, 1.0, dim).astype(np.float32)
    tumour = stroma.copy()
    tumour[informative] += PROTOTYPE_GAP * rng.choice([-1.0, 1.0], PROTOTYPE_DIMS).astype(np.float32)
    numpy_dtype = np.float16 if feature_dtype == "float16" else np.float32

    staging = layout.root / f".synthetic-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        features_dir = staging / layout.features.name
        features_dir.mkdir()
        rows = []
        for k, case in enumerate(case_ids):
            n = int(rng.integers(n_patches[0], n_patches[1] + 1))
            is_tumour = rng.random(n) < tumour_fraction[k]
            bag = rng.standard_normal((n, dim), dtype=np.float32)
            bag += stroma
            bag[is_tumour] += tumour - stroma
            cuts = [0, int(rng.integers(1, n)), n] if two_slides[k] else [0, n]
            for s in range(len(cuts) - 1):
                stem = f"{case}-01Z-00-DX{s + 1}.{seed:04d}{k:05d}"
                # A fresh array (astype copies): torch.save of a view would write the whole bag. The
                # cast runs in numpy, which is faster than torch's on busy cores.
                chunk = bag[cuts[s] : cuts[s + 1]].astype(numpy_dtype)
                torch.save(torch.from_numpy(chunk), features_dir / f"{stem}.pt")
                rows.append((case, f"{stem}.svs", k))

        slides = pd.DataFrame(rows, columns=["case_id", "slide_id", "patient"])
        patient = slides.pop("patient").to_numpy()
        table = pd.concat(
            [
                slides,
                pd.DataFrame(
                    {
                        "site": sites[patient],
                        "is_female": is_female[patient],
                        "oncotree_code": "SYN",
                        "age": age[patient],
                        "survival_months": observed[patient],
                        "censorship": censorship[patient],
                    }
                ),
                omics_frame.iloc[patient].reset_index(drop=True),
            ],
            axis=1,
        )
        csv_text = table.to_csv(index=True, float_format="%.4f")  # MCAT files carry the index column
        if zipped:
            with zipfile.ZipFile(staging / layout.csv.name, "w", zipfile.ZIP_DEFLATED) as bundle:
                bundle.writestr(f"../dataset_csv/{layout.csv.name}", csv_text)
        else:
            (staging / layout.csv.name).write_text(csv_text)
        signatures.to_csv(staging / layout.signatures.name, index=False)

        splits_dir = staging / layout.splits.name
        splits_dir.mkdir()
        _write_folds(splits_dir, case_ids, censorship == 0, n_folds, rng)

        edges = fit_time_bins(observed, censorship, n_bins, what="synthetic cohort")
        pd.DataFrame(
            {
                "case_id": case_ids,
                "log_hazard": log_hazard,
                "risk_omics": risk_omics,
                "risk_path": risk_path,
                "tumour_fraction": tumour_fraction,
                "event_time": event_time,
                "censoring_time": censoring_time,
                "survival_months": observed,
                "censorship": censorship,
                "label": assign_bins(observed, edges),
                "n_slides": np.where(two_slides, 2, 1),
            }
        ).to_csv(staging / layout.truth.name, index=False)
        meta = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "n_patients": n_patients,
            "n_patches": list(n_patches),
            "dim": dim,
            "feature_dtype": feature_dtype,
            "omics_weights": weights,
            "path_weight": PATH_WEIGHT,
            "noise_std": NOISE_STD,
            "weibull_shape": WEIBULL_SHAPE,
            "censoring_target": censoring,
            "censoring_observed": float(censorship.mean()),
            "bin_edges": edges.tolist(),
        }
        (staging / layout.meta.name).write_text(json.dumps(meta, indent=2) + "\n")

        for entry in staging.iterdir():
            target = layout.root / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return layout.root


def _write_folds(directory: Path, case_ids: list[str], events: np.ndarray, n_folds: int, rng) -> None:
    """MCAT-layout fold files, each stratum (event / censored) dealt round-robin after a shuffle."""
    fold_of = np.empty(len(case_ids), dtype=np.int64)
    for stratum in (False, True):
        members = rng.permutation(np.flatnonzero(events == stratum))
        fold_of[members] = np.arange(members.size) % n_folds
    ids = np.asarray(case_ids, dtype=object)
    for k in range(n_folds):
        frame = pd.DataFrame({"train": pd.Series(ids[fold_of != k]), "val": pd.Series(ids[fold_of == k])})
        frame.to_csv(directory / f"splits_{k}.csv", index=True)
