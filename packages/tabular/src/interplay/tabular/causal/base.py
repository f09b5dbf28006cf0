"""Shared pieces of the treatment-effect models: input checks, scaling, the estimator API.

Neural outcome models derive from :class:`CausalModel`: they take raw covariates and treatments,
standardise them with buffers fitted on the training split (so a checkpoint or a pickled estimator
predicts from raw inputs by itself), and predict the outcome in standardised units; losses are
computed there, predictions for users are returned in the data's units.

Every estimator (neural or not) follows one API in the style of EconML / scikit-learn, provided by
:class:`EffectEstimatorMixin` on top of ``fit(X, t, y, dosage=None)`` and
``predict_outcome(X, t, dosage=None)``:

* ``effect(X, t0=0, t1=1)`` — ``mu(x, t1) - mu(x, t0)`` per row;
* ``dose_response(X, grid)`` — the average dose-response ``mean_i mu(x_i, g)`` for each ``g``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from interplay.tabular.causal.data import TREATMENT_KINDS, CausalInputError

__all__ = [
    "ADVERSARIES",
    "CausalModel",
    "PropensityHead",
    "EffectEstimatorMixin",
    "check_covariates",
    "check_fit_inputs",
    "check_treatment",
    "infer_treatment",
]


# -- input validation ---------------------------------------------------------------------------------------
def check_covariates(X: Any, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """``X`` as a finite float array ``[n, p]``; clear errors for other shapes, NaN and wrong widths."""
    if hasattr(X, "to_numpy"):  # pandas
        X = X.to_numpy()
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CausalInputError(f"{name} must be numeric covariates [n, p]: {err}") from None
    if array.ndim != 2:
        raise CausalInputError(f"{name} must be 2-D [n_samples, n_covariates], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise CausalInputError(f"{name} is empty (shape {array.shape})")
    if not np.isfinite(array).all():
        rows, cols = np.nonzero(~np.isfinite(array))
        raise CausalInputError(
            f"{name} contains NaN or inf ({len(rows)} value(s), first at row {rows[0]}, column {cols[0]}); "
            "impute or drop them first"
        )
    if n_features is not None and array.shape[1] != n_features:
        raise CausalInputError(
            f"{name} has {array.shape[1]} covariates, the estimator was fitted on {n_features}"
        )
    return array


def _vector(v: Any, name: str, n: int | None) -> np.ndarray:
    if hasattr(v, "to_numpy"):
        v = v.to_numpy()
    try:
        array = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CausalInputError(f"{name} must be numeric: {err}") from None
    if array.ndim != 1:
        raise CausalInputError(
            f"{name} must be 1-D [n_samples], got shape {array.shape}"
            + (
                " (pass one treatment per row; for (treatment, dosage) pairs use dosage=...)"
                if name == "t"
                else ""
            )
        )
    if not np.isfinite(array).all():
        raise CausalInputError(f"{name} contains NaN or inf")
    if n is not None and len(array) != n:
        raise CausalInputError(f"{name} has {len(array)} rows but X has {n}")
    return array


def infer_treatment(t: np.ndarray, dosage: np.ndarray | None) -> tuple[str, int]:
    """``(kind, n_treatments)`` of observed treatments: 0/1 -> binary, small integers -> categorical."""
    values = np.unique(t)
    integral = np.all(values == np.round(values)) and values.min() >= 0
    if dosage is not None:
        if not integral:
            raise CausalInputError("with a dosage, t must hold treatment indices 0..K-1")
        return "dosage", int(values.max()) + 1
    if integral and set(values.tolist()) <= {0.0, 1.0}:
        return "binary", 2
    if integral and values.max() < 20:
        return "categorical", int(values.max()) + 1
    return "continuous", 1


def check_treatment(t: np.ndarray, kind: str, n_treatments: int, name: str = "t") -> np.ndarray:
    """``t`` checked against the treatment kind (integers for discrete kinds)."""
    if kind not in TREATMENT_KINDS:
        raise CausalInputError(f"treatment must be one of {', '.join(TREATMENT_KINDS)}, got {kind!r}")
    if kind == "continuous":
        return t.astype(np.float64)
    if not np.all(t == np.round(t)) or t.min() < 0 or t.max() >= n_treatments:
        raise CausalInputError(
            f"{name} must hold treatment indices in 0..{n_treatments - 1} for {kind} treatments, "
            f"found {sorted(set(np.unique(t).tolist()))[:6]}"
        )
    return t.astype(np.int64)


def check_fit_inputs(X: Any, t: Any, y: Any, dosage: Any = None) -> tuple[np.ndarray, ...]:
    """Validated ``(X [n, p], t [n], y [n], dosage [n] | None)``."""
    X = check_covariates(X)
    n = len(X)
    t = _vector(t, "t", n)
    y = _vector(y, "y", n)
    dosage = None if dosage is None else _vector(dosage, "dosage", n)
    if n < 4:
        raise CausalInputError(f"need at least 4 samples to fit, got {n}")
    return X, t, y, dosage


# -- the estimator API ---------------------------------------------------------------------------------------
class EffectEstimatorMixin:
    """``effect`` and ``dose_response`` on top of ``predict_outcome`` (EconML-style names)."""

    def _check_is_fitted(self) -> None:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "treatment_")

    def _broadcast_treatment(self, value: Any, n: int, name: str) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 0:
            array = np.full(n, float(array))
        return _vector(array, name, n)

    def effect(
        self, X: Any, t0: Any = 0, t1: Any = 1, dosage0: Any = None, dosage1: Any = None
    ) -> np.ndarray:
        """Per-row effect of moving from ``t0`` to ``t1`` (scalars or arrays): ``mu(x, t1) - mu(x, t0)``."""
        self._check_is_fitted()
        X = check_covariates(X, n_features=self.n_features_in_)
        return self.predict_outcome(X, t1, dosage1) - self.predict_outcome(X, t0, dosage0)

    def dose_response(self, X: Any, grid: Any, t: Any = None) -> np.ndarray:
        """Average dose-response ``mean_i mu(x_i, g)`` for each ``g`` in ``grid``.

        For continuous treatments ``g`` is the treatment; for (treatment, dosage) pairs ``g`` is the
        dosage and ``t`` the treatment index it is given with.
        """
        self._check_is_fitted()
        X = check_covariates(X, n_features=self.n_features_in_)
        grid = np.asarray(grid, dtype=np.float64).reshape(-1)
        if self.treatment_ == "dosage":
            if t is None:
                raise CausalInputError("dose_response of (treatment, dosage) pairs needs t=<treatment index>")
            return np.array([self.predict_outcome(X, t, g).mean() for g in grid])
        return np.array([self.predict_outcome(X, g).mean() for g in grid])


# -- the adversarial propensity head (TransTEE's TR / PTR) -------------------------------------------------
ADVERSARIES = ("none", "tr", "ptr")


class PropensityHead(nn.Module):
    """TransTEE's treatment discriminator (``DisCri``): ``Linear(d, hidden) -> ReLU -> Linear(hidden, k)``.

    It predicts the treatment from a representation; TR reads one output as the treatment value (MSE),
    PTR two as a Gaussian's mean and log-variance (negative log-likelihood). For categorical
    treatments both use ``k = n_treatments`` logits and cross-entropy (a squared error on class
    indices would order unordered classes).
    """

    def __init__(self, dim: int, hidden: int = 50, outputs: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
        for layer in (self.net[0], self.net[2]):
            nn.init.xavier_uniform_(layer.weight)  # the released DisCri's initialiser

    def forward(self, representation: Tensor) -> Tensor:
        return self.net(representation)


# -- neural outcome models -----------------------------------------------------------------------------------
class CausalModel(nn.Module):
    """Base of the neural outcome models ``mu(x, t[, dosage])``.

    Subclasses implement :meth:`forward` returning a dict with ``outcome`` (``[B]``, standardised
    units) and, where they have one, ``representation`` (``[B, d]``, what an adversarial propensity
    head sees); they may extend :meth:`loss` with their own terms.
    """

    supported_treatments: tuple[str, ...] = TREATMENT_KINDS

    def __init__(self, n_covariates: int, treatment: str = "binary", n_treatments: int = 2) -> None:
        super().__init__()
        if treatment not in self.supported_treatments:
            raise CausalInputError(
                f"{type(self).__name__} handles {', '.join(self.supported_treatments)} treatments, "
                f"not {treatment!r}"
            )
        if n_covariates < 1:
            raise CausalInputError(f"n_covariates must be >= 1, got {n_covariates}")
        if treatment == "binary" and n_treatments != 2:
            raise CausalInputError(f"binary treatments have n_treatments=2, got {n_treatments}")
        if treatment == "categorical" and n_treatments < 2:
            raise CausalInputError(f"categorical treatments need n_treatments >= 2, got {n_treatments}")
        if treatment == "dosage" and n_treatments < 1:
            raise CausalInputError(f"dosage treatments need n_treatments >= 1, got {n_treatments}")
        self.n_covariates, self.treatment, self.n_treatments = n_covariates, treatment, n_treatments
        self.adversarial, self.adversarial_weight = "none", 0.0
        self.propensity_head: PropensityHead | None = None
        # fitted on the training split by set_scaling(); saved with the weights
        self.register_buffer("x_mean", torch.zeros(n_covariates))
        self.register_buffer("x_scale", torch.ones(n_covariates))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_scale", torch.ones(()))
        # continuous treatments and dosages are mapped to [0, 1] (spline bases and VCNet's density grid)
        self.register_buffer("t_low", torch.zeros(()))
        self.register_buffer("t_range", torch.ones(()))

    # -- scaling ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_scaling(self, x: np.ndarray, y: np.ndarray, t_continuous: np.ndarray | None = None) -> None:
        """Fit the standardisation of covariates and outcome (and the [0, 1] map of a continuous part)."""
        x = np.asarray(x, dtype=np.float64)
        scale = x.std(0)
        self.x_mean.copy_(torch.as_tensor(x.mean(0)))
        self.x_scale.copy_(torch.as_tensor(np.where(scale > 1e-8, scale, 1.0)))
        y_scale = float(np.std(y))
        self.y_mean.fill_(float(np.mean(y)))
        self.y_scale.fill_(y_scale if y_scale > 1e-8 else 1.0)
        if t_continuous is not None:
            low, high = float(np.min(t_continuous)), float(np.max(t_continuous))
            self.t_low.fill_(low)
            self.t_range.fill_(high - low if high - low > 1e-8 else 1.0)

    def scale_covariates(self, x: Tensor) -> Tensor:
        return (x - self.x_mean) / self.x_scale

    def scale_continuous(self, value: Tensor) -> Tensor:
        return (value - self.t_low) / self.t_range

    def standardise_outcome(self, y: Tensor) -> Tensor:
        return (y - self.y_mean) / self.y_scale

    def unstandardise_outcome(self, outcome: Tensor) -> Tensor:
        return outcome * self.y_scale + self.y_mean

    @property
    def continuous_part(self) -> str | None:
        """Which input is continuous: ``"t"`` (continuous treatments), ``"dosage"`` or ``None``."""
        return {"continuous": "t", "dosage": "dosage"}.get(self.treatment)

    # -- to implement ------------------------------------------------------------------------------------
    def forward(self, x: Tensor, t: Tensor, dosage: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(self, output: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Factual loss: MSE of the standardised outcome (subclasses add their own terms)."""
        mse = torch.mean((output["outcome"] - self.standardise_outcome(batch["y"])) ** 2)
        return mse, {"mse": mse}

    # -- predictions ----------------------------------------------------------------------------------------
    def predict_outcome(self, x: Tensor, t: Tensor, dosage: Tensor | None = None) -> Tensor:
        """``mu(x, t)`` in the data's units."""
        return self.unstandardise_outcome(self(x, t, dosage)["outcome"])

    def potential_outcomes(self, x: Tensor, dosage: Tensor | None = None) -> Tensor:
        """``[B, K]`` predicted outcomes under every value of a discrete treatment."""
        if self.treatment == "continuous":
            raise CausalInputError("potential_outcomes needs a discrete treatment; use dose_response")
        columns = []
        for k in range(self.n_treatments):
            t = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            columns.append(self.predict_outcome(x, t, dosage))
        return torch.stack(columns, 1)

    def _grid_inputs(
        self, n: int, value: float, treatment: int | None, device
    ) -> tuple[Tensor, Tensor | None]:
        if self.treatment == "dosage":
            if treatment is None:
                raise CausalInputError(
                    "the dose-response of (treatment, dosage) pairs needs a treatment index"
                )
            return torch.full((n,), treatment, dtype=torch.long, device=device), torch.full(
                (n,), value, device=device
            )
        if self.treatment != "continuous":
            raise CausalInputError(
                f"average dose-response needs a continuous part, not {self.treatment} treatments"
            )
        return torch.full((n,), value, device=device), None

    def average_outcomes(self, x: Tensor, grid: Tensor, treatment: int | None = None) -> Tensor:
        """``[G]``: ``mean_i mu(x_i, g)`` per dose ``g`` (the dosage of ``treatment`` for dosage pairs)."""
        values = []
        for g in grid.tolist():
            t, dosage = self._grid_inputs(len(x), g, treatment, x.device)
            values.append(self.predict_outcome(x, t, dosage).mean())
        return torch.stack(values)

    def outcome_parameters(self) -> list[nn.Parameter]:
        """Parameters of the outcome model (everything but the adversary, when there is one)."""
        adversary = {id(p) for p in self.adversary_parameters()}
        return [p for p in self.parameters() if id(p) not in adversary]

    def adversary_parameters(self) -> list[nn.Parameter]:
        head = getattr(self, "propensity_head", None)
        return list(head.parameters()) if head is not None else []

    # -- adversarial propensity regularisation -------------------------------------------------------------
    def build_adversary(self, kind: str, dim: int, hidden: int = 50, weight: float = 0.5) -> None:
        """Attach TransTEE's propensity head (``kind`` in :data:`ADVERSARIES`) on ``dim``-wide features."""
        if kind not in ADVERSARIES:
            raise CausalInputError(f"adversarial must be one of {', '.join(ADVERSARIES)}, got {kind!r}")
        self.adversarial, self.adversarial_weight = kind, float(weight)
        if kind == "none":
            self.propensity_head = None
            return
        outputs = self.n_treatments if self.treatment == "categorical" else (1 if kind == "tr" else 2)
        self.propensity_head = PropensityHead(dim, hidden, outputs)

    def treatment_target(self, batch: dict[str, Tensor]) -> Tensor:
        """What the adversary predicts: the treatment (class, 0/1 or [0, 1]-scaled value) or the dosage."""
        if self.treatment == "categorical":
            return batch["t"].long()
        if self.treatment == "dosage":
            return self.scale_continuous(batch["dosage"].float())
        if self.treatment == "continuous":
            return self.scale_continuous(batch["t"].float())
        return batch["t"].float()

    def adversary_loss(self, representation: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The discriminator's loss on ``representation``: MSE (TR), Gaussian NLL (PTR) or cross-entropy."""
        if self.propensity_head is None:
            raise CausalInputError(f"{type(self).__name__} has no propensity head (adversarial='none')")
        out = self.propensity_head(representation)
        target = self.treatment_target(batch)
        if self.treatment == "categorical":
            return nn.functional.cross_entropy(out, target)
        if self.adversarial == "tr":
            return torch.mean((out[:, 0] - target) ** 2)
        mean, log_var = out[:, 0], out[:, 1]
        return 0.5 * torch.mean((target - mean) ** 2 / torch.exp(log_var) + log_var)
