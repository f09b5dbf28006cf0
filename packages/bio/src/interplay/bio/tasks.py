"""Survival training: the per-fold data module and the survival LightningModule (MCAT / MOTCat recipe).

Papers
------
* Xu & Chen, "Multimodal Optimal Transport-based Co-Attention Transformer with Global Structure
  Consistency for Survival Prediction" (MOTCat), ICCV 2023, and Chen et al., "Multimodal
  Co-Attention Transformer for Survival Prediction in Gigapixel Whole Slide Images" (MCAT), ICCV
  2021: one patient per step (bags differ in size) with gradient accumulation over 32 patients,
  Adam (lr 2e-4, weight decay 1e-5), 20 epochs, 4 discrete time bins, label-balanced sampling.
* Zadeh & Schmid, "Bias in Cross-Entropy-Based Training of Deep Survival Networks", TPAMI 2020: the
  discrete-time negative log-likelihood with censoring (hazards ``h = sigmoid(logits)``,
  ``S(k) = prod_{j<=k} (1 - h_j)``; an event in bin ``y`` costs ``-log S(y-1) - log h(y)``, a patient
  censored in bin ``y`` costs ``-log S(y)``; ``alpha`` re-weights the uncensored term), as
  :func:`interplay.bio.survival.nll_survival_loss` implements it.
* Cox, "Regression Models and Life-Tables", JRSS-B 1972: the partial likelihood
  (:func:`interplay.bio.survival.cox_partial_likelihood_loss`) for models that output a risk score.
* Metrics: Harrell's concordance index (Harrell et al., JAMA 1982), the cumulative/dynamic
  time-dependent AUC (Uno et al. 2007; Hung & Chiang 2010) and the integrated Brier score (Graf et al.
  1999), as scikit-survival computes them, with inverse-probability-of-censoring weights estimated on
  the training patients.

Data
----
:class:`SurvivalDataModule` serves one fold of a :class:`~interplay.bio.data.base.SurvivalCohort` as
dict items with the keys of :data:`~interplay.bio.data.base.ITEM_KEYS`. Everything fitted (omics
standardisation, the time-bin edges, the balanced-sampling weights) sees the fold's training patients
only. ``selection`` says which patients select the epoch:

* ``honest``: an inner validation split carved from the fold's training patients
  (:func:`interplay.bio.data.splits.inner_validation`), never touching the fold's test patients;
* ``reference``: the fold's test patients themselves, as the MCAT / MOTCat code does (it calls them
  ``val`` and keeps the best epoch on them). Use it only to reproduce the published figures.

Cox loss and batch size
-----------------------
The partial likelihood compares patients with each other, so a step needs several patients: with the
Cox loss, ``data.batch_size`` must be at least 2 (omics-only models, whose items stack). Gradient
accumulation does not help here: Lightning back-propagates each micro-batch on its own, so a Cox term
over one patient is identically zero. The NLL loss is per patient and works with batch 1 +
accumulation (Lightning divides each micro-batch loss by the accumulation count, i.e. the step uses
the mean over the 32 patients, as the reference code's ``loss / gc``).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchmetrics.utilities import dim_zero_cat

from interplay.bio.data.base import ITEM_KEYS, SurvivalCohort
from interplay.bio.registry import REGISTRY
from interplay.core.errors import ConfigError, DataError, InterplayError
from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES

__all__ = [
    "LOSSES",
    "MODALITIES",
    "OMICS_LAYOUTS",
    "SELECTIONS",
    "SurvivalDataModule",
    "SurvivalItems",
    "SurvivalMetrics",
    "SurvivalTask",
    "collate_survival",
    "model_outputs",
    "survival_scores",
]

LOSSES = ("nll", "cox")
SELECTIONS = ("honest", "reference")
MODALITIES = ("multimodal", "omics", "path")
# groups: one standardised vector per signature group (MCAT / MOTCat tokens); flat: the signature
# genes' columns concatenated; all: every omics column of the table (the reference SNN's input)
OMICS_LAYOUTS = ("groups", "flat", "all")


# -- data ------------------------------------------------------------------------------------------------
class SurvivalItems(Dataset):
    """Patients of one split as dict items (:data:`ITEM_KEYS`); bags are read when an item is asked for."""

    def __init__(
        self,
        case_ids: Sequence[str],
        omics: list[np.ndarray] | np.ndarray | None,
        labels: np.ndarray,
        times: np.ndarray,
        censorship: np.ndarray,
        *,
        slides: dict[str, list[str]] | None = None,
        bags: Any | None = None,
    ) -> None:
        self.case_ids = list(case_ids)
        self.omics = omics
        self.labels = np.asarray(labels, dtype=np.int64)
        self.times = np.asarray(times, dtype=np.float32)
        self.censorship = np.asarray(censorship, dtype=np.float32)
        self.slides = slides or {}
        self.bags = bags

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.case_ids[index]
        if self.omics is None:
            omics: Any = None
        elif isinstance(self.omics, list):
            omics = [torch.from_numpy(group[index]) for group in self.omics]
        else:
            omics = torch.from_numpy(self.omics[index])
        path = None
        if self.bags is not None:
            slides = self.slides.get(case)
            if not slides:
                raise DataError(f"case {case} has no slide_id: no patch features to load")
            path = self.bags.load_case(slides)
        item = {
            "path": path,
            "omics": omics,
            "label": int(self.labels[index]),
            "time": float(self.times[index]),
            "censorship": float(self.censorship[index]),
            "case_id": case,
        }
        assert tuple(item) == ITEM_KEYS
        return item


def collate_survival(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch: ``path [B, N, D]`` (bags of one size only, i.e. B = 1 in practice),
    ``omics`` list of ``[B, d_g]`` or ``[B, d]``, ``label`` / ``time`` / ``censorship`` ``[B]``."""
    paths = [item["path"] for item in items]
    if all(p is None for p in paths):
        path = None
    elif len({tuple(p.shape) for p in paths}) == 1:
        path = torch.stack(paths)
    else:
        raise ConfigError(
            "data.batch_size > 1 needs bags of one size: patients' bags differ (use batch_size: 1 with "
            "trainer.accumulate_grad_batches for models that read patch features)"
        )
    first = items[0]["omics"]
    if first is None:
        omics: Any = None
    elif isinstance(first, list):
        omics = [torch.stack([item["omics"][g] for item in items]) for g in range(len(first))]
    else:
        omics = torch.stack([item["omics"] for item in items])
    return {
        "path": path,
        "omics": omics,
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "time": torch.tensor([item["time"] for item in items], dtype=torch.float32),
        "censorship": torch.tensor([item["censorship"] for item in items], dtype=torch.float32),
        "case_id": [item["case_id"] for item in items],
    }


def balanced_weights(labels: np.ndarray, censorship: np.ndarray, n_bins: int) -> np.ndarray:
    """Sampling weight ``N / count(class)`` per patient, class = (time bin, censorship), as the
    reference's ``make_weights_for_balanced_classes_split`` (``--weighted_sample``, on by default)."""
    classes = np.asarray(labels, dtype=np.int64) * 2 + np.asarray(censorship, dtype=np.int64)
    counts = np.bincount(classes, minlength=2 * n_bins).astype(np.float64)
    return len(classes) / counts[classes]


class SurvivalDataModule(pl.LightningDataModule):
    """One cross-validation fold of a cohort, as train / val / test :class:`SurvivalItems`.

    Args:
        cohort: every patient of the cohort (omics raw, as read).
        folds: ``(train_case_ids, test_case_ids)`` per fold; the split files' ``val`` column is the
            fold's test set.
        fold: which fold this module serves.
        selection: ``honest`` (validation carved from the fold's training patients) or
            ``reference`` (validation = the fold's test patients, as the MCAT / MOTCat code).
        inner_val_fraction: share of the fold's training patients held out under ``honest``.
        signatures: group name -> gene names; ``None`` with ``omics_layout="all"`` only.
        omics_layout: see :data:`OMICS_LAYOUTS`.
        modality: which inputs the model reads (:data:`MODALITIES`); ``path`` needs ``bags``.
        bags: a :class:`~interplay.bio.data.bags.PatchBags` (``load_case(slide_ids)``).
        n_bins: discrete time bins, edges from the training patients' uncensored times.
        weighted_sample: draw training patients with (bin, censorship)-balanced weights.
        split_seed: seed of the inner validation split (the model seed is separate).
    """

    def __init__(
        self,
        cohort: SurvivalCohort,
        folds: Sequence[tuple[Sequence[str], Sequence[str]]],
        *,
        fold: int = 0,
        selection: str = "honest",
        inner_val_fraction: float = 0.15,
        signatures: dict[str, list[str]] | None = None,
        omics_layout: str = "groups",
        modality: str = "multimodal",
        bags: Any | None = None,
        n_bins: int = 4,
        weighted_sample: bool = False,
        split_seed: int = 0,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("selection", selection, SELECTIONS),
            ("omics_layout", omics_layout, OMICS_LAYOUTS),
            ("modality", modality, MODALITIES),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"data.params.{name}: unknown value {value!r} (choose from {', '.join(allowed)})"
                )
        if not 0.0 < inner_val_fraction < 1.0:
            raise ConfigError(f"inner_val_fraction must be in (0, 1), got {inner_val_fraction}")
        if not folds:
            raise DataError(f"{cohort.source}: no cross-validation folds")
        if not 0 <= fold < len(folds):
            raise ConfigError(f"data.params.fold must be in [0, {len(folds)}), got {fold}")
        if modality != "omics" and bags is None:
            raise DataError(
                f"{cohort.source}: modality '{modality}' needs patch features: set data.params.bags to the "
                "directory of per-slide bags (<slide_id>.pt or .h5, CLAM layout)"
            )
        if modality != "path" and omics_layout != "all" and not signatures:
            raise ConfigError(f"omics_layout '{omics_layout}' needs signatures (gene groups)")
        self.cohort, self.folds, self.fold = cohort, list(folds), fold
        self.selection, self.inner_val_fraction = selection, inner_val_fraction
        self.signatures, self.omics_layout, self.modality = signatures, omics_layout, modality
        self.bags, self.n_bins, self.weighted_sample = bags, n_bins, weighted_sample
        self.split_seed = split_seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.predict_split = "test"

        train_ids, test_ids = self.folds[fold]
        train_index = cohort.index_of(list(train_ids), what=f"fold {fold} train")
        test_index = cohort.index_of(list(test_ids), what=f"fold {fold} test")
        overlap = set(train_ids) & set(test_ids)
        if overlap:
            raise DataError(f"fold {fold}: case ids in both train and test: {', '.join(sorted(overlap)[:5])}")
        if selection == "honest":
            from interplay.bio.data.splits import inner_validation

            fit_index, val_index = inner_validation(
                train_index, cohort.events[train_index], fraction=inner_val_fraction, seed=split_seed
            )
            fit_index, val_index = np.asarray(fit_index, np.int64), np.asarray(val_index, np.int64)
        else:
            fit_index, val_index = train_index, test_index
        self.index = {"train": fit_index, "val": val_index, "test": test_index}
        for split, index in self.index.items():
            if len(index) == 0:
                raise DataError(f"{cohort.source}: fold {fold} has an empty {split} split")
        if not cohort.events[fit_index].any():
            raise DataError(
                f"{cohort.source}: fold {fold}'s training patients have no uncensored event "
                "(censorship == 0): time bins and the survival loss need deaths"
            )
        self._fit()
        self.datasets: dict[str, SurvivalItems] = {}

    # -- fitting on the training patients only ----------------------------------------------------------
    def _fit(self, state: dict[str, Any] | None = None) -> None:
        from interplay.bio.data.genomics import GenomicGroups
        from interplay.bio.data.labels import assign_bins, fit_time_bins

        train = self.index["train"]
        if state is None:
            edges = fit_time_bins(
                self.cohort.times[train],
                self.cohort.censorship[train],
                n_bins=self.n_bins,
                what=f"{self.cohort.source} (fold {self.fold} training patients)",
            )
        else:
            edges = state["bin_edges"]
        self.bin_edges = np.asarray(edges, dtype=np.float64)
        self.labels = np.asarray(assign_bins(self.cohort.times, self.bin_edges), dtype=np.int64)
        self.genomics: GenomicGroups | None = None
        self.omic_sizes: list[int] = []
        if self.modality != "path":
            if state is not None:
                self.genomics = GenomicGroups.from_dict(state["genomics"])
            else:
                train_table = self.cohort.omics.iloc[train]
                if self.omics_layout == "all":
                    columns = [str(c) for c in self.cohort.omics.columns]
                    self.genomics = GenomicGroups.fit_columns(train_table, {"all": columns})
                else:
                    self.genomics = GenomicGroups.fit(train_table, self.signatures)
            sizes = [int(s) for s in self.genomics.sizes]
            self.omic_sizes = sizes if self.omics_layout == "groups" else [self.genomics.input_dim]
        self._omics_cache: Any = None
        self.datasets = {}

    def _all_omics(self) -> list[np.ndarray] | np.ndarray | None:
        """The whole cohort's omics, transformed with the training statistics (cached)."""
        if self._omics_cache is None and self.genomics is not None:
            table = self.cohort.omics
            if self.omics_layout == "groups":
                self._omics_cache = [np.asarray(g, dtype=np.float32) for g in self.genomics.transform(table)]
            else:
                self._omics_cache = np.asarray(self.genomics.flat_transform(table), dtype=np.float32)
        return self._omics_cache

    # -- what the engine reads ----------------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """Model and task parameters the data decide (filled in where the config leaves them out)."""
        train = self.index["train"]
        sizes = self.omic_sizes
        return {
            "omic_sizes": sizes,
            "omic_input_dim": int(sum(sizes)) if sizes else 0,
            "n_classes": self.n_bins,
            "n_bins": self.n_bins,
            "path_input_dim": int(getattr(self.bags, "dim", 1024)) if self.bags is not None else 1024,
            "bin_edges": self.bin_edges.tolist(),
            "train_times": self.cohort.times[train].tolist(),
            "train_censorship": self.cohort.censorship[train].tolist(),
        }

    def case_ids(self, split: str) -> list[str]:
        return [self.cohort.case_ids[i] for i in self.index[split]]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(flat omics [n, d], times [n], censorship [n])`` of ``split`` (for scikit-survival models)."""
        omics = self._all_omics()
        if omics is None:
            raise ConfigError("a tabular survival model needs omics (modality 'omics' or 'multimodal')")
        flat = np.concatenate(omics, axis=1) if isinstance(omics, list) else omics
        index = self.index[split]
        return flat[index], self.cohort.times[index], self.cohort.censorship[index]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        omics = self._all_omics()
        for split, index in self.index.items():
            if omics is None:
                split_omics = None
            elif isinstance(omics, list):
                split_omics = [group[index] for group in omics]
            else:
                split_omics = omics[index]
            self.datasets[split] = SurvivalItems(
                [self.cohort.case_ids[i] for i in index],
                split_omics,
                self.labels[index],
                self.cohort.times[index],
                self.cohort.censorship[index],
                slides=self.cohort.slides,
                bags=self.bags if self.modality != "omics" else None,
            )

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        sampler, shuffle, generator = None, False, None
        if train:
            generator = torch.Generator().manual_seed(self.seed)
            if self.weighted_sample:
                weights = balanced_weights(dataset.labels, dataset.censorship, self.n_bins)
                sampler = WeightedRandomSampler(
                    torch.as_tensor(weights, dtype=torch.double), len(weights), generator=generator
                )
            else:
                shuffle = True
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            generator=generator if shuffle else None,
            collate_fn=collate_survival,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_split not in self.index:
            raise ConfigError(f"split must be one of train, val, test, got {self.predict_split!r}")
        return self._loader(self.predict_split, train=False)

    def split_loader(self, split: str) -> DataLoader:
        """An ordered loader over ``split`` (train, val or test), e.g. to score the training patients."""
        if split not in self.index:
            raise ConfigError(f"split must be one of train, val, test, got {split!r}")
        return self._loader(split, train=False)

    # -- checkpoints keep what was fitted, so a restored model sees the same features ----------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "fold": self.fold,
            "selection": self.selection,
            "bin_edges": self.bin_edges.tolist(),
            "val_case_ids": self.case_ids("val"),
        }
        if self.genomics is not None:
            state["genomics"] = self.genomics.to_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("fold", self.fold) != self.fold:
            raise ConfigError(
                f"checkpoint is for fold {state_dict['fold']}, the config asks for fold {self.fold}"
            )
        self._fit(state_dict)


# -- model adapter -------------------------------------------------------------------------------------
def model_outputs(model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
    """Call a survival model on a batch and return its dict (``hazards``, ``survival``, ``risk``, ...).

    Models take ``forward(batch)`` (the batch dict) or keyword inputs named after :data:`ITEM_KEYS`
    (``path=``, ``omics=``); which one is read from the signature once and cached on the class.
    """
    style = getattr(type(model), "_interplay_call_style", None)
    if style is None:
        params = [p for p in inspect.signature(model.forward).parameters.values() if p.name != "self"]
        names = {p.name for p in params}
        style = "kwargs" if names & {"path", "omics"} else "batch"
        type(model)._interplay_call_style = style
    if style == "kwargs":
        params = inspect.signature(model.forward).parameters
        kwargs = {k: batch[k] for k in ("path", "omics") if k in params}
        out = model(**kwargs)
    else:
        out = model(batch)
    if not isinstance(out, dict) or "risk" not in out:
        raise TypeError(
            f"{type(model).__name__} must return a dict with at least 'risk' (got {type(out).__name__})"
        )
    return out


# -- metrics -------------------------------------------------------------------------------------------
def survival_scores(
    times: np.ndarray,
    censorship: np.ndarray,
    risk: np.ndarray,
    *,
    survival_bins: np.ndarray | None = None,
    bin_edges: np.ndarray | None = None,
    train_times: np.ndarray | None = None,
    train_censorship: np.ndarray | None = None,
    survival_function: Callable[[np.ndarray], np.ndarray] | None = None,
    full: bool = True,
    split: str = "test",
) -> dict[str, float]:
    """``c_index`` and, with ``full`` and the training follow-up, ``td_auc`` (mean cumulative/dynamic
    AUC) and ``ibs`` (needs per-bin survival curves and the bin edges, or ``survival_function(times)
    -> [n, len(times)]`` for continuous-time models), both on
    :func:`interplay.bio.survival.evaluation_times` (quantiles of the test deaths inside the evaluable
    range). A figure that cannot be computed (no comparable pair, no death) is NaN, with a warning."""
    from interplay.bio import survival as sv

    times = np.asarray(times, np.float64)
    events = np.asarray(censorship, np.float64) == 0
    risk = np.asarray(risk, np.float64)
    out: dict[str, float] = {}
    try:
        out["c_index"] = float(sv.concordance_index(times, events, risk, split=split))
    except InterplayError as err:
        warnings.warn(f"c-index not computable: {err}", RuntimeWarning, stacklevel=2)
        out["c_index"] = math.nan
    if not full or train_times is None or train_censorship is None:
        return out
    train_times = np.asarray(train_times, np.float64)
    train_events = np.asarray(train_censorship, np.float64) == 0
    out["td_auc"] = out["ibs"] = math.nan
    try:
        grid = sv.evaluation_times(train_times, times, events, split=split)
        out["td_auc"] = sv.time_dependent_auc(
            train_times, train_events, times, events, risk, grid, split=split
        )[2]
        curves = None
        if survival_function is not None:
            curves = np.asarray(survival_function(grid), dtype=np.float64)
        elif survival_bins is not None and bin_edges is not None:
            curves = sv.survival_at(grid, np.asarray(bin_edges), np.asarray(survival_bins))
        if curves is not None:
            out["ibs"] = sv.integrated_brier_score(
                train_times, train_events, times, events, curves, grid, split=split
            )
    except InterplayError as err:
        warnings.warn(f"time-dependent AUC / IBS not computable: {err}", RuntimeWarning, stacklevel=2)
    return out


class SurvivalMetrics(torchmetrics.Metric):
    """Epoch-level survival figures from per-patient risks (and survival curves on test)."""

    full_state_update = False

    def __init__(
        self,
        full: bool = False,
        split: str = "validation",
        bin_edges: Sequence[float] | None = None,
        train_times: Sequence[float] | None = None,
        train_censorship: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.full, self.split = full, split
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, np.float64)
        self.train_times = None if train_times is None else np.asarray(train_times, np.float64)
        self.train_censorship = None if train_censorship is None else np.asarray(train_censorship, np.float64)
        for name in ("risk", "times", "censorship", "survival"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, risk: Tensor, times: Tensor, censorship: Tensor, survival: Tensor | None = None) -> None:
        self.risk.append(risk.detach().flatten().double())
        self.times.append(times.detach().flatten().double())
        self.censorship.append(censorship.detach().flatten().double())
        if survival is not None:
            self.survival.append(survival.detach().reshape(len(risk.flatten()), -1).double())

    def compute(self) -> dict[str, Tensor]:
        risk = dim_zero_cat(self.risk).cpu().numpy()
        times = dim_zero_cat(self.times).cpu().numpy()
        censorship = dim_zero_cat(self.censorship).cpu().numpy()
        has_curves = len(self.survival) if isinstance(self.survival, list) else self.survival.numel()
        curves = dim_zero_cat(self.survival).cpu().numpy() if has_curves else None
        with warnings.catch_warnings():
            # sanity-check epochs see two patients; their NaN is discarded by Lightning
            warnings.simplefilter("ignore", RuntimeWarning)
            scores = survival_scores(
                times,
                censorship,
                risk,
                survival_bins=curves,
                bin_edges=self.bin_edges,
                train_times=self.train_times,
                train_censorship=self.train_censorship,
                full=self.full,
                split=self.split,
            )
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()}


# -- the task ------------------------------------------------------------------------------------------
@REGISTRY.tasks.register(
    "survival", "discrete-time NLL (or Cox) survival loss; c-index for selection; td-AUC and IBS on test"
)
class SurvivalTask(TaskModule):
    """Survival training of any model returning ``{"hazards", "survival", "risk", ...}``.

    Args:
        loss: ``nll`` (discrete-time likelihood on the model's hazards) or ``cox`` (partial
            likelihood on its risk; needs ``data.batch_size >= 2``).
        alpha: weight of the extra uncensored term in the NLL (the reference's ``--alpha_surv``, 0.0).
        n_classes: number of time bins (from the data module).
        bin_edges, train_times, train_censorship: from the data module; used by the test metrics
            (survival curves at arbitrary times, censoring weights).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig | None = None,
        loss: str = "nll",
        alpha: float = 0.0,
        n_classes: int = 4,
        bin_edges: Sequence[float] | None = None,
        train_times: Sequence[float] | None = None,
        train_censorship: Sequence[float] | None = None,
    ) -> None:
        super().__init__(model, optimizer or OptimizerConfig(name="adam", lr=2e-4, weight_decay=1e-5))
        if loss not in LOSSES:
            raise ConfigError(f"task.params.loss: unknown loss {loss!r} (choose from {', '.join(LOSSES)})")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"task.params.alpha must be in [0, 1], got {alpha}")
        self.loss_name, self.alpha, self.n_classes = loss, float(alpha), n_classes
        self.metrics.update(
            {
                f"{stage}_metrics": torchmetrics.MetricCollection(
                    {
                        "survival": SurvivalMetrics(
                            full=stage == "test",
                            split=stage,
                            bin_edges=bin_edges,
                            train_times=train_times,
                            train_censorship=train_censorship,
                        )
                    },
                    prefix=f"{stage}/",
                )
                for stage in STAGES
            }
        )

    def outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return model_outputs(self.model, batch)

    def survival_loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        from interplay.bio import survival as sv

        if self.loss_name == "cox":
            risk = out["risk"].reshape(-1)
            return sv.cox_partial_likelihood_loss(risk, batch["time"], batch["censorship"] == 0)
        if "hazards" not in out:
            raise ConfigError(f"{type(self.model).__name__} outputs no hazards: use task.params.loss=cox")
        return sv.nll_survival_loss(out["hazards"], batch["label"], batch["censorship"], alpha=self.alpha)

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        out = self.outputs(batch)
        loss = self.survival_loss(out, batch)
        survival = out.get("survival") if stage == "test" else None
        self.stage_metrics(stage).update(
            out["risk"].reshape(-1), batch["time"], batch["censorship"], survival
        )
        return loss

    def predict_batch(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        out = self.outputs(batch)
        result = {
            "risk": out["risk"].reshape(-1),
            "time": batch["time"],
            "censorship": batch["censorship"],
            "label": batch["label"],
        }
        if "survival" in out:
            result["survival"] = out["survival"].reshape(len(batch["time"]), -1)
        return result
