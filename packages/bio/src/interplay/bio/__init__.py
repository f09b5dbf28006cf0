"""Interplay bio: survival with OT co-attention (MOTCat), drug sensitivity (PaccMann MCA),
protein-protein binding affinity.

Survival (Xu & Chen, MOTCat, ICCV 2023): :class:`SurvivalTask` and :class:`SurvivalDataModule`
(:mod:`interplay.bio.tasks`), the 5-fold runner :func:`cross_validate` (:mod:`interplay.bio.evaluation`),
readers in :mod:`interplay.bio.data`, losses and metrics in :mod:`interplay.bio.survival`, models in
:mod:`interplay.bio.models`. Names other than ``REGISTRY`` load on first use, so ``import
interplay.bio`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from interplay.bio.registry import REGISTRY

_LAZY = {
    "SurvivalTask": "interplay.bio.tasks",
    "SurvivalDataModule": "interplay.bio.tasks",
    "cross_validate": "interplay.bio.evaluation",
    "SurvivalCohort": "interplay.bio.data.base",
    "read_tcga_csv": "interplay.bio.data.tcga",
    "read_signatures": "interplay.bio.data.genomics",
    "GenomicGroups": "interplay.bio.data.genomics",
    "PatchBags": "interplay.bio.data.bags",
    "write_synthetic_cohort": "interplay.bio.data.synthetic",
    "MOTCat": "interplay.bio.models.motcat",
}

__all__ = ["REGISTRY", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interplay.bio' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
