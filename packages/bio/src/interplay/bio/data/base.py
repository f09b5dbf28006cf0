"""The in-memory forms the survival readers, models and protocols share.

* :class:`SurvivalCohort`: one row per patient (case): follow-up time, censorship, the omics table
  (raw values, columns such as ``TP53_rnaseq`` / ``TP53_cnv`` / ``TP53_mut``), the slides of each case
  (their patch-feature bags are loaded lazily, by :mod:`interplay.bio.data.bags`), and where the
  cohort was read from (for error messages).
* :class:`SurvivalBatch`-style items are plain dicts (see :data:`ITEM_KEYS`) so that the Lightning
  data modules, the models and the losses agree on names without importing each other.

Conventions (TCGA / MCAT / MOTCat): ``censorship = 1`` means the event was NOT observed (censored),
``0`` means death observed; times are months. Discrete-time labels are bin indices ``0..n_bins-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from interplay.core.errors import DataError

__all__ = ["ITEM_KEYS", "SurvivalCohort"]

#: keys of one patient's item as produced by the survival datasets and read by models / losses:
#: ``path`` [N, 1024] float patch features (absent or ``None`` for omics-only models),
#: ``omics`` list of 1-D float tensors (one per genomic group) or one 1-D tensor for SNN,
#: ``label`` int bin, ``time`` float months, ``censorship`` float {0, 1}, ``case_id`` str.
ITEM_KEYS = ("path", "omics", "label", "time", "censorship", "case_id")


@dataclass
class SurvivalCohort:
    """Patients of one cohort, indexed by ``case_ids`` (unique)."""

    case_ids: list[str]
    times: np.ndarray
    censorship: np.ndarray
    omics: pd.DataFrame  # index: case_id, in the order of case_ids
    slides: dict[str, list[str]] = field(default_factory=dict)
    clinical: pd.DataFrame | None = None
    source: str = "cohort"

    def __post_init__(self) -> None:
        self.case_ids = [str(c) for c in self.case_ids]
        self.times = np.asarray(self.times, dtype=np.float64)
        self.censorship = np.asarray(self.censorship, dtype=np.float64)
        n = len(self.case_ids)
        if len(set(self.case_ids)) != n:
            dupes = pd.Series(self.case_ids)[pd.Series(self.case_ids).duplicated()].unique()
            raise DataError(f"{self.source}: duplicate case_id values: {', '.join(sorted(set(dupes))[:5])}")
        for name in ("times", "censorship"):
            values = getattr(self, name)
            if values.shape != (n,):
                raise DataError(f"{self.source}: {name} has shape {values.shape}, expected ({n},)")
            if not np.isfinite(values).all():
                bad = [self.case_ids[i] for i in np.flatnonzero(~np.isfinite(values))[:5]]
                raise DataError(f"{self.source}: {name} is missing or not finite for cases {', '.join(bad)}")
        if (self.times < 0).any():
            raise DataError(f"{self.source}: survival times must be >= 0")
        if not np.isin(self.censorship, (0.0, 1.0)).all():
            raise DataError(f"{self.source}: censorship must be 0 (event) or 1 (censored)")
        if list(self.omics.index.astype(str)) != self.case_ids:
            raise DataError(f"{self.source}: the omics table's index must be the case_ids in cohort order")

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def events(self) -> np.ndarray:
        """``1`` where death was observed (``1 - censorship``), as scikit-survival expects (bool)."""
        return self.censorship == 0

    def index_of(self, case_ids: Sequence[str], *, what: str = "split") -> np.ndarray:
        """Positions of ``case_ids`` in the cohort; unknown ids raise an error naming them."""
        position = {c: i for i, c in enumerate(self.case_ids)}
        missing = [c for c in case_ids if c not in position]
        if missing:
            shown = ", ".join(map(str, missing[:5]))
            raise DataError(f"{what}: {len(missing)} case ids are not in {self.source}: {shown}")
        return np.array([position[c] for c in case_ids], dtype=np.int64)

    def select(self, index: Sequence[int] | np.ndarray) -> SurvivalCohort:
        index = np.arange(len(self))[np.asarray(index)]
        ids = [self.case_ids[i] for i in index]
        return SurvivalCohort(
            case_ids=ids,
            times=self.times[index],
            censorship=self.censorship[index],
            omics=self.omics.iloc[index],
            slides={c: self.slides[c] for c in ids if c in self.slides},
            clinical=None if self.clinical is None else self.clinical.iloc[index],
            source=self.source,
        )
