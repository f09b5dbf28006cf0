"""Survival-analysis toolkit: discrete-time and Cox losses, censored metrics, Kaplan-Meier plots.

Losses (torch, differentiable)
------------------------------
* :func:`nll_survival_loss`: the discrete-time negative log-likelihood of MCAT / MOTCat (Chen et al.,
  ICCV 2021; Xu & Chen, ICCV 2023), from Zadeh & Schmid, "Bias in Cross-Entropy-Based Training of Deep
  Survival Networks" (TPAMI 2020, Eq. 3). With hazards ``h_k = P(T in bin k | T >= bin k)``,
  survival ``S_k = prod_{j<=k} (1 - h_j)`` and ``S_{-1} = 1``, a patient in bin ``y`` with
  censorship ``c`` (1 = censored) contributes

      uncensored = -(1 - c) * (log S_{y-1} + log h_y)        censored = -c * log S_y
      loss = (1 - alpha) * (uncensored + censored) + alpha * uncensored

  exactly as ``nll_loss`` in MCAT's / MOTCat's ``utils/utils.py`` (probabilities clamped at ``eps``
  before the log; ``alpha`` up-weights uncensored patients, 0.0 by default in MOTCat's ``main.py``).
* :func:`cox_partial_likelihood_loss`: Cox's negative log partial likelihood (Cox, JRSS-B 1972) with
  Breslow's handling of ties, averaged over the events:
  ``-(1 / n_events) * sum_{i: event} [r_i - log sum_{j: t_j >= t_i} exp(r_j)]``.
* :func:`survival_from_hazards` (``S = cumprod(1 - h)``) and :func:`risk_from_hazards`
  (MCAT's ``risk = -sum_k S_k``: higher means earlier death).

Metrics (numpy, through scikit-survival)
----------------------------------------
* :func:`concordance_index`: Harrell's c-index for right-censored data
  (``sksurv.metrics.concordance_index_censored``; tied risks count 1/2).
* :func:`time_dependent_auc`: cumulative/dynamic AUC (Uno et al. 2007; ``cumulative_dynamic_auc``).
* :func:`integrated_brier_score`: IPCW Brier score integrated over time (Graf et al. 1999).
* :func:`survival_at`: a discrete-time model's step survival function evaluated at arbitrary times.

scikit-survival requires evaluation times inside the test follow-up, ``[min t_test, max t_test)``,
and its censoring estimator (fitted on the training patients) cannot extrapolate past the largest
training time. Here evaluation times outside ``[min t_test, min(max t_test, max t_train))`` are
dropped (the times actually used are returned), and test patients followed beyond the largest
training time are treated as censored at that time. That changes nothing at the kept evaluation
times: such a patient is a control (alive) at every one of them either way, and the Kaplan-Meier
estimates before that time are unchanged.

* :func:`kaplan_meier_plot`: Kaplan-Meier curves (lifelines) of the patients split into low / high
  predicted risk, with 95 % bands and the log-rank p-value, saved as a PNG.

Conventions: ``events`` is 1 / True where death was observed (``1 - censorship``); ``risk`` is higher
for earlier death.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from interplay.core.data import atomic_save
from interplay.core.errors import ConfigError, DataError

__all__ = [
    "concordance_index",
    "cox_partial_likelihood_loss",
    "evaluation_times",
    "integrated_brier_score",
    "kaplan_meier_plot",
    "nll_survival_loss",
    "risk_from_hazards",
    "risk_threshold",
    "survival_at",
    "survival_from_hazards",
    "time_dependent_auc",
]

ArrayLike = Sequence[float] | np.ndarray | Tensor
_REDUCTIONS = ("mean", "sum", "none")


# =============================================================================== losses


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def nll_survival_loss(
    hazards_or_logits: Tensor,
    labels: Tensor,
    censorship: Tensor,
    alpha: float = 0.0,
    eps: float = 1e-7,
    *,
    from_logits: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Discrete-time survival NLL (module docstring); ``[B, K]`` hazards (or logits), ``[B]`` bins.

    ``from_logits=True`` takes the pre-sigmoid outputs and computes ``log h = logsigmoid(x)`` and
    ``log(1 - h) = logsigmoid(-x)`` in log space (no underflow in ``cumprod``); with the same ``eps``
    clamp it equals the hazard form up to round-off.
    """
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    if hazards_or_logits.ndim != 2:
        raise DataError(f"hazards must be [batch, bins], got shape {tuple(hazards_or_logits.shape)}")
    batch, n_bins = hazards_or_logits.shape
    labels = torch.as_tensor(labels, device=hazards_or_logits.device).reshape(-1)
    censorship = torch.as_tensor(censorship, device=hazards_or_logits.device).reshape(-1)
    if labels.numel() != batch or censorship.numel() != batch:
        raise DataError(
            f"nll_survival_loss: {batch} predictions but {labels.numel()} labels and "
            f"{censorship.numel()} censorship values"
        )
    if labels.is_floating_point():
        labels = labels.round()
    labels = labels.long()
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= n_bins):
        raise DataError(f"nll_survival_loss: labels must be bins 0..{n_bins - 1}, got {labels.tolist()[:8]}")
    y = labels.view(batch, 1)
    c = censorship.to(hazards_or_logits.dtype).view(batch, 1)

    if from_logits:
        log_floor = math.log(eps)
        log_h = torch.nn.functional.logsigmoid(hazards_or_logits)
        log_s = torch.cumsum(torch.nn.functional.logsigmoid(-hazards_or_logits), dim=1)
        log_s_padded = torch.cat([torch.zeros_like(c), log_s], dim=1)  # S_{-1} = 1
        log_s_before = torch.gather(log_s_padded, 1, y).clamp(min=log_floor)
        log_h_y = torch.gather(log_h, 1, y).clamp(min=log_floor)
        log_s_at = torch.gather(log_s_padded, 1, y + 1).clamp(min=log_floor)
    else:
        hazards = hazards_or_logits
        survival = torch.cumprod(1 - hazards, dim=1)
        s_padded = torch.cat([torch.ones_like(c), survival], dim=1)  # S_{-1} = 1
        log_s_before = torch.log(torch.gather(s_padded, 1, y).clamp(min=eps))
        log_h_y = torch.log(torch.gather(hazards, 1, y).clamp(min=eps))
        log_s_at = torch.log(torch.gather(s_padded, 1, y + 1).clamp(min=eps))

    uncensored = -(1 - c) * (log_s_before + log_h_y)
    censored = -c * log_s_at
    loss = (1 - alpha) * (censored + uncensored) + alpha * uncensored
    return _reduce(loss.view(batch), reduction)


def cox_partial_likelihood_loss(risk: Tensor, times: ArrayLike, events: ArrayLike) -> Tensor:
    """Negative Cox log partial likelihood, Breslow ties, mean over events (module docstring).

    ``risk`` ``[B]`` (or ``[B, 1]``) log-hazard scores; ``times`` ``[B]``; ``events`` ``[B]``
    (1 = death observed). A batch without events carries no partial-likelihood information: the loss is
    then 0 (still connected to the graph, so a training step does not fail). O(B log B).
    """
    risk = risk.reshape(-1)
    times_t = torch.as_tensor(np.asarray(times) if not isinstance(times, Tensor) else times)
    times_t = times_t.to(device=risk.device, dtype=torch.float64).reshape(-1)
    events_t = torch.as_tensor(np.asarray(events) if not isinstance(events, Tensor) else events)
    events_t = events_t.to(device=risk.device).reshape(-1).to(risk.dtype)
    if not (risk.numel() == times_t.numel() == events_t.numel()):
        raise DataError(
            f"cox_partial_likelihood_loss: {risk.numel()} risks, {times_t.numel()} times and "
            f"{events_t.numel()} event indicators"
        )
    n_events = events_t.sum()
    if risk.numel() == 0 or float(n_events) == 0:
        return risk.sum() * 0.0
    order = torch.argsort(times_t, descending=True, stable=True)
    risk_sorted, times_sorted, events_sorted = risk[order], times_t[order], events_t[order]
    log_cumulative = torch.logcumsumexp(risk_sorted, dim=0)
    # Breslow: the risk set of t_i is every j with t_j >= t_i, tied times included, i.e. up to the
    # last position of t_i's tie group in descending order.
    negated = -times_sorted  # ascending
    last_of_ties = torch.searchsorted(negated, negated, right=True) - 1
    log_risk_set = log_cumulative[last_of_ties]
    return -((risk_sorted - log_risk_set) * events_sorted).sum() / n_events


def survival_from_hazards(hazards: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """``S_k = prod_{j<=k} (1 - h_j)`` along the last axis (torch or numpy, same type out)."""
    if isinstance(hazards, Tensor):
        return torch.cumprod(1 - hazards, dim=-1)
    return np.cumprod(1 - np.asarray(hazards, dtype=np.float64), axis=-1)


def risk_from_hazards(hazards: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """MCAT / MOTCat risk ``-sum_k S_k`` (minus the expected number of bins survived)."""
    survival = survival_from_hazards(hazards)
    if isinstance(survival, Tensor):
        return -survival.sum(dim=-1)
    return -survival.sum(axis=-1)


# =============================================================================== metric inputs


def _vector(values: ArrayLike, name: str, split: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise DataError(f"{split}: {name} must be one value per patient, got shape {array.shape}")
    if array.dtype == bool:
        return array
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{split}: {name} must be numbers: {error}") from error
    if not np.isfinite(array).all():
        raise DataError(
            f"{split}: {name} holds NaN or infinite values at {np.flatnonzero(~np.isfinite(array))[:5]}"
        )
    return array


def _events(values: ArrayLike, split: str, name: str = "events") -> np.ndarray:
    array = _vector(values, name, split)
    if array.dtype != bool:
        if not np.isin(array, (0.0, 1.0)).all():
            raise DataError(f"{split}: {name} must be 0/1 or boolean (1 = death observed)")
        array = array.astype(bool)
    return array


def _survival_inputs(times: ArrayLike, events: ArrayLike, split: str, *others: tuple[str, ArrayLike]):
    times_a = _vector(times, "times", split).astype(np.float64)
    events_a = _events(events, split)
    arrays = [(name, _vector(v, name, split)) for name, v in others]
    lengths = {"times": times_a.size, "events": events_a.size} | {n: a.shape[0] for n, a in arrays}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{split}: lengths differ: " + ", ".join(f"{k} {v}" for k, v in lengths.items()))
    if (times_a < 0).any():
        raise DataError(f"{split}: survival times must be >= 0")
    return times_a, events_a, [a for _, a in arrays]


def _structured(events: np.ndarray, times: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=events.astype(bool), time=times.astype(np.float64))


# =============================================================================== metrics


def concordance_index(
    times: ArrayLike, events: ArrayLike, risk: ArrayLike, *, split: str = "validation", tied_tol: float = 1e-8
) -> float:
    """Harrell's c-index (scikit-survival), higher ``risk`` = earlier death.

    Raises :class:`DataError` naming ``split`` when it is undefined: fewer than 2 patients, no
    observed death, or no comparable pair.
    """
    from sksurv.exceptions import NoComparablePairException
    from sksurv.metrics import concordance_index_censored

    times_a, events_a, (risk_a,) = _survival_inputs(times, events, split, ("risk", risk))
    if times_a.size < 2:
        raise DataError(f"{split}: the concordance index needs at least 2 patients, got {times_a.size}")
    if not events_a.any():
        raise DataError(
            f"{split}: no uncensored patient (no observed death), so the concordance index is undefined"
        )
    try:
        return float(concordance_index_censored(events_a, times_a, risk_a.astype(np.float64), tied_tol)[0])
    except NoComparablePairException as error:
        raise DataError(
            f"{split}: no comparable patient pair, so the concordance index is undefined"
        ) from error


def _valid_range(train_times: np.ndarray, test_times: np.ndarray) -> tuple[float, float]:
    """``[low, high)`` where scikit-survival can evaluate: inside the test follow-up and before the
    end of the training follow-up (the censoring estimator's support)."""
    return float(test_times.min()), float(min(test_times.max(), train_times.max()))


def _truncate(times: np.ndarray, events: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up beyond ``limit`` becomes 'censored at limit' (exact for evaluation times < limit)."""
    beyond = times > limit
    return np.where(beyond, limit, times), events & ~beyond


def evaluation_times(
    train_times: ArrayLike,
    test_times: ArrayLike,
    test_events: ArrayLike,
    n_times: int = 10,
    *,
    quantiles: tuple[float, float] = (0.1, 0.9),
    split: str = "validation",
) -> np.ndarray:
    """A default grid: ``n_times`` quantiles (``quantiles`` range) of the test patients' death times,
    kept inside the range where :func:`time_dependent_auc` / :func:`integrated_brier_score` are defined.
    """
    train_a = _vector(train_times, "train times", split)
    test_a, events_a, _ = _survival_inputs(test_times, test_events, split)
    if not events_a.any():
        raise DataError(f"{split}: no uncensored patient, so there is no death time to evaluate at")
    low, high = _valid_range(train_a, test_a)
    grid = np.quantile(test_a[events_a], np.linspace(quantiles[0], quantiles[1], int(n_times)))
    grid = np.unique(grid[(grid >= low) & (grid < high)])
    if grid.size == 0:
        raise DataError(f"{split}: no death time lies in the evaluable range [{low:g}, {high:g})")
    return grid


def _keep_times(times: ArrayLike, low: float, high: float, split: str) -> np.ndarray:
    requested = _vector(times, "evaluation times", split)
    keep = (requested >= low) & (requested < high)
    if not keep.any():
        raise DataError(
            f"{split}: none of the evaluation times {np.round(requested, 3).tolist()[:6]} lies in the "
            f"evaluable range [{low:g}, {high:g}) (test follow-up, capped at the last training time)"
        )
    return keep


def time_dependent_auc(
    train_times: ArrayLike,
    train_events: ArrayLike,
    test_times: ArrayLike,
    test_events: ArrayLike,
    risk: ArrayLike,
    eval_times: ArrayLike | None = None,
    *,
    split: str = "validation",
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cumulative/dynamic AUC at ``eval_times``: ``(times used, auc per time, mean auc)``.

    ``eval_times=None`` uses :func:`evaluation_times`; given times outside the evaluable range are
    dropped (module docstring). The training patients only estimate the censoring distribution (IPCW).
    """
    from sksurv.metrics import cumulative_dynamic_auc

    train_t, train_e, _ = _survival_inputs(train_times, train_events, f"{split} (training part)")
    test_t, test_e, (risk_a,) = _survival_inputs(test_times, test_events, split, ("risk", risk))
    if not test_e.any():
        raise DataError(f"{split}: no uncensored patient, so the time-dependent AUC is undefined")
    if eval_times is None:
        grid = evaluation_times(train_t, test_t, test_e, split=split)
    else:
        low, high = _valid_range(train_t, test_t)
        requested = _vector(eval_times, "evaluation times", split)
        grid = np.unique(requested[_keep_times(requested, low, high, split)])
    limit = _valid_range(train_t, test_t)[1]
    test_t, test_e = _truncate(test_t, test_e, limit)
    try:
        auc, mean_auc = cumulative_dynamic_auc(
            _structured(train_e, train_t), _structured(test_e, test_t), risk_a.astype(np.float64), grid
        )
    except ValueError as error:
        raise DataError(f"{split}: cannot compute the time-dependent AUC: {error}") from error
    return grid, np.asarray(auc, dtype=np.float64), float(mean_auc)


def integrated_brier_score(
    train_times: ArrayLike,
    train_events: ArrayLike,
    test_times: ArrayLike,
    test_events: ArrayLike,
    survival_probs: ArrayLike,
    times: ArrayLike,
    *,
    split: str = "validation",
) -> float:
    """IPCW integrated Brier score of ``survival_probs`` ``[n_test, len(times)]`` (``S(t)`` per patient).

    Columns whose time is outside the evaluable range are dropped (module docstring); at least two
    times must remain. For a discrete-time model build ``survival_probs`` with :func:`survival_at`.
    """
    from sksurv.metrics import integrated_brier_score as sksurv_ibs

    train_t, train_e, _ = _survival_inputs(train_times, train_events, f"{split} (training part)")
    test_t, test_e, _ = _survival_inputs(test_times, test_events, split)
    times_a = _vector(times, "evaluation times", split)
    probs = np.asarray(
        survival_probs.detach().cpu().numpy() if isinstance(survival_probs, Tensor) else survival_probs,
        dtype=np.float64,
    )
    if probs.ndim != 2 or probs.shape != (test_t.size, times_a.size):
        raise DataError(
            f"{split}: survival_probs must be [patients, times] = [{test_t.size}, {times_a.size}], "
            f"got {probs.shape}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise DataError(f"{split}: survival_probs must be probabilities in [0, 1]")
    if np.unique(times_a).size != times_a.size:
        raise DataError(f"{split}: evaluation times repeat a value")
    low, high = _valid_range(train_t, test_t)
    keep = _keep_times(times_a, low, high, split)
    if keep.sum() < 2:
        raise DataError(
            f"{split}: the integrated Brier score needs at least 2 evaluation times in [{low:g}, {high:g}), "
            f"got {int(keep.sum())}"
        )
    order = np.argsort(times_a[keep])
    test_t, test_e = _truncate(test_t, test_e, high)
    try:
        return float(
            sksurv_ibs(
                _structured(train_e, train_t),
                _structured(test_e, test_t),
                probs[:, keep][:, order],
                times_a[keep][order],
            )
        )
    except ValueError as error:
        raise DataError(f"{split}: cannot compute the integrated Brier score: {error}") from error


def survival_at(times: ArrayLike, edges: ArrayLike, survival_bins: ArrayLike) -> np.ndarray:
    """``S(t)`` ``[n_patients, len(times)]`` of a discrete-time model with bins ``[edges[k], edges[k+1])``.

    ``survival_bins[:, k] = P(T >= edges[k + 1])`` (:func:`survival_from_hazards`). The step function
    is ``1`` before the first bin ends and ``survival_bins[:, k]`` from ``edges[k + 1]`` on: a patient
    is credited with surviving a bin only once the bin is over (no interpolation inside a bin).
    """
    edges_a = np.asarray(edges, dtype=np.float64).reshape(-1)
    if isinstance(survival_bins, Tensor):
        survival_bins = survival_bins.detach().cpu().numpy()
    survival = np.asarray(survival_bins, dtype=np.float64)
    if survival.ndim == 1:
        survival = survival[None, :]
    if survival.ndim != 2 or survival.shape[1] != edges_a.size - 1:
        raise DataError(
            f"survival_at: survival_bins must be [patients, {edges_a.size - 1}] for {edges_a.size} edges, "
            f"got {survival.shape}"
        )
    times_a = _vector(times, "times", "survival_at").astype(np.float64)
    passed = np.searchsorted(edges_a[1:], times_a, side="right")  # bins over by time t
    padded = np.concatenate([np.ones((survival.shape[0], 1)), survival], axis=1)
    return padded[:, passed]


# =============================================================================== Kaplan-Meier


def risk_threshold(train_risk: ArrayLike) -> float:
    """The median training risk: the cut-off to split validation patients into low / high risk."""
    return float(np.median(_vector(train_risk, "risk", "training")))


def kaplan_meier_plot(
    times: ArrayLike,
    events: ArrayLike,
    risk: ArrayLike,
    path: str | os.PathLike[str],
    *,
    split: Literal["median"] | float = "median",
    title: str = "Kaplan-Meier curves by predicted risk",
    time_unit: str = "months",
) -> dict[str, Any]:
    """Kaplan-Meier curves of the low- and high-risk halves with the log-rank p-value, saved as PNG.

    ``split="median"`` cuts at the median of ``risk``; a number cuts there (e.g.
    :func:`risk_threshold` of the training risks). High risk is ``risk > threshold``. Returns
    ``{"p_value", "n_low", "n_high", "threshold", "path"}``.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ConfigError(f"kaplan_meier_plot writes PNG files: {target} should end in .png")
    times_a, events_a, (risk_a,) = _survival_inputs(times, events, "Kaplan-Meier", ("risk", risk))
    if isinstance(split, str):
        if split != "median":
            raise ConfigError(f"split must be 'median' or a risk threshold, got {split!r}")
        threshold = float(np.median(risk_a))
    else:
        threshold = float(split)
    high = risk_a > threshold
    n_low, n_high = int((~high).sum()), int(high.sum())
    if n_low == 0 or n_high == 0:
        raise DataError(
            f"Kaplan-Meier: the risk threshold {threshold:g} leaves the "
            f"{'high' if n_high == 0 else 'low'}-risk group empty ({times_a.size} patients)"
        )
    with warnings.catch_warnings():  # lifelines 0.30 calls pandas' sum positionally (pandas 4 warning)
        warnings.filterwarnings("ignore", message=".*arguments of sum will be keyword-only")
        test = logrank_test(
            times_a[~high], times_a[high], event_observed_A=events_a[~high], event_observed_B=events_a[high]
        )
    p_value = float(test.p_value)

    figure = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for mask, label, colour in ((~high, "low risk", "tab:blue"), (high, "high risk", "tab:red")):
        fitter = KaplanMeierFitter().fit(
            times_a[mask], events_a[mask], label=f"{label} (n={int(mask.sum())})"
        )
        fitter.plot_survival_function(ax=axes, ci_show=True, color=colour)
    axes.set_xlabel(f"time ({time_unit})")
    axes.set_ylabel("survival probability")
    axes.set_ylim(0.0, 1.05)
    axes.set_title(f"{title}\nlog-rank p = {p_value:.3g}", fontsize=10)
    axes.legend(loc="lower left", title=f"log-rank p = {p_value:.3g}", fontsize=8, title_fontsize=8)
    figure.tight_layout()
    atomic_save(lambda temp: figure.savefig(temp, dpi=120, format="png"), target)
    return {"p_value": p_value, "n_low": n_low, "n_high": n_high, "threshold": threshold, "path": str(target)}
