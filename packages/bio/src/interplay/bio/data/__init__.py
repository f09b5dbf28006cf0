"""bio readers, one per on-disk format, each with a synthetic generator writing the same format.

* :mod:`.base`: :class:`SurvivalCohort` and :data:`ITEM_KEYS`, the shared in-memory forms;
* :mod:`.tcga`: MCAT / MOTCat TCGA CSV (one row per slide, plain or zipped) -> cohort;
* :mod:`.genomics`: signatures CSV, :class:`GenomicGroups` (6 gene-group tokens, train-fitted
  standardisation) and AnnData (``.h5ad``) interop;
* :mod:`.bags`: :class:`PatchBags`, lazily loaded per-slide patch features (``.pt`` / CLAM ``.h5``);
* :mod:`.splits`: MCAT split CSVs, 5-fold CV and the stratified inner validation split;
* :mod:`.labels`: discrete-time labels (quartiles of the uncensored times);
* :mod:`.synthetic`: a cohort with a known two-modality hazard, written in all of the above formats.
"""

from interplay.bio.data.bags import PatchBags, slide_stem
from interplay.bio.data.base import ITEM_KEYS, SurvivalCohort
from interplay.bio.data.genomics import (
    GenomicGroups,
    attach_omics,
    omics_to_anndata,
    read_h5ad_omics,
    read_signatures,
    write_h5ad_omics,
)
from interplay.bio.data.labels import assign_bins, fit_cohort_bins, fit_time_bins
from interplay.bio.data.splits import cv_splits, inner_validation, read_split
from interplay.bio.data.synthetic import SyntheticCohortLayout, write_synthetic_cohort
from interplay.bio.data.tcga import OMICS_SUFFIXES, omics_columns, read_tcga_csv

__all__ = [
    "ITEM_KEYS",
    "OMICS_SUFFIXES",
    "GenomicGroups",
    "PatchBags",
    "SurvivalCohort",
    "SyntheticCohortLayout",
    "assign_bins",
    "attach_omics",
    "cv_splits",
    "fit_cohort_bins",
    "fit_time_bins",
    "inner_validation",
    "omics_columns",
    "omics_to_anndata",
    "read_h5ad_omics",
    "read_signatures",
    "read_split",
    "read_tcga_csv",
    "slide_stem",
    "write_h5ad_omics",
    "write_synthetic_cohort",
]
