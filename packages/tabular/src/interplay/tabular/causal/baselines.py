"""Treatment-effect baselines: TARNet, DragonNet, VCNet, LightGBM S-/T-learners, EconML learners.

* TARNet (Shalit, Johansson and Sontag, ICML 2017; CFRNet without its IPM term): a shared
  representation ``Phi(x)`` (3 x 200, ELU) and one outcome head per treatment (2 x 100, ELU);
  factual MSE. With ``adversarial="tr"`` it gets TransTEE's propensity head ("TARNet + TR" in
  TransTEE's tables).
* DragonNet (Shi, Blei and Veitch, NeurIPS 2019: its architecture and targeted regularisation):
  ``Phi(x)`` (3 x 200, ELU), a propensity head ``g(x) = sigmoid(w . Phi)``, two outcome heads
  (2 x 100, ELU); loss
  ``MSE + alpha * BCE(g, t) + beta * mean((y - Q_t - eps * (t / g - (1 - t) / (1 - g)))^2)``, the
  last term being targeted regularisation with the learnable ``eps`` (``alpha = beta = 1``; ``g`` is
  squeezed into [0.01/1.02, 1.01/1.02] as the released code does).
* VCNet (Nie, Ye, Liu and Nicolae, ICLR 2021; ``Vcnet`` in TransTEE's copy of its code):
  ``Phi(x)`` (2 x 50, ReLU), a density head estimating ``p(t | x)`` on a grid of 10 cells with
  linear interpolation, and a varying-coefficient outcome head whose weights are splines of ``t``
  (truncated power basis, degree 2, knots 1/3, 2/3): ``h(t, z) = sum_b B_b(t) (W_b z + c_b)``.
  Loss ``MSE - alpha * log g(t | x)`` (``alpha = 0.5``); functional targeted regularisation is not
  included.
* LightGBM S-learner (one model on ``[x, t]``) and T-learner (one model per treatment value), the
  reference here: 300 trees, learning rate 0.05, 15 leaves.
* EconML's ``DRLearner`` (logistic propensity clipped at 0.01, LightGBM outcome and final models)
  and ``CausalForestDML`` (LightGBM nuisances), when ``econml`` is installed: effect estimators
  without an outcome model, so they provide ``effect`` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.tabular.causal.base import (
    CausalModel,
    EffectEstimatorMixin,
    check_covariates,
    check_fit_inputs,
    check_treatment,
    infer_treatment,
)
from interplay.tabular.causal.data import CausalInputError
from interplay.tabular.registry import REGISTRY

__all__ = [
    "TARNet",
    "DragonNet",
    "VCNet",
    "LightGBMSLearner",
    "LightGBMTLearner",
    "EconMLCausalForest",
    "EconMLDRLearner",
    "truncated_power_basis",
]


def _mlp(sizes: list[int], activation: type[nn.Module], last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


# -- TARNet --------------------------------------------------------------------------------------------------
@REGISTRY.models.register(
    "tarnet", "TARNet: shared representation, one outcome head per treatment (Shalit et al., 2017)"
)
class TARNet(CausalModel):
    supported_treatments = ("binary", "categorical")

    def __init__(
        self,
        n_covariates: int,
        treatment: str = "binary",
        n_treatments: int = 2,
        hidden: int = 200,
        layers: int = 3,
        head_hidden: int = 100,
        head_layers: int = 2,
        dropout: float = 0.0,
        adversarial: str = "none",
        adversarial_weight: float = 0.5,
        adversary_hidden: int = 50,
    ) -> None:
        super().__init__(n_covariates, treatment, n_treatments)
        self.representation = nn.Sequential(
            _mlp([n_covariates] + [hidden] * layers, nn.ELU), nn.Dropout(dropout)
        )
        self.heads = nn.ModuleList(
            _mlp([hidden] + [head_hidden] * head_layers + [1], nn.ELU, last_activation=False)
            for _ in range(n_treatments)
        )
        self.build_adversary(adversarial, hidden, adversary_hidden, adversarial_weight)

    def _heads(self, phi: Tensor) -> Tensor:
        return torch.cat([head(phi) for head in self.heads], 1)  # [B, K]

    def forward(self, x: Tensor, t: Tensor, dosage: Tensor | None = None) -> dict[str, Tensor]:
        phi = self.representation(self.scale_covariates(x.float()))
        outcomes = self._heads(phi)
        chosen = outcomes.gather(1, t.long().view(-1, 1)).squeeze(1)
        return {"outcome": chosen, "representation": phi, "all_outcomes": outcomes}

    def potential_outcomes(self, x: Tensor, dosage: Tensor | None = None) -> Tensor:
        phi = self.representation(self.scale_covariates(x.float()))
        return self.unstandardise_outcome(self._heads(phi))


# -- DragonNet -----------------------------------------------------------------------------------------------
@REGISTRY.models.register(
    "dragonnet", "DragonNet: propensity head + targeted regularisation (Shi et al., 2019)"
)
class DragonNet(TARNet):
    supported_treatments = ("binary",)

    def __init__(
        self,
        n_covariates: int,
        treatment: str = "binary",
        n_treatments: int = 2,
        hidden: int = 200,
        layers: int = 3,
        head_hidden: int = 100,
        head_layers: int = 2,
        dropout: float = 0.0,
        propensity_weight: float = 1.0,
        targeted_weight: float = 1.0,
    ) -> None:
        super().__init__(
            n_covariates, treatment, n_treatments, hidden, layers, head_hidden, head_layers, dropout
        )
        self.propensity = nn.Linear(hidden, 1)
        self.epsilon = nn.Parameter(torch.zeros(()))  # targeted regularisation's fluctuation parameter
        self.propensity_weight, self.targeted_weight = propensity_weight, targeted_weight

    def forward(self, x: Tensor, t: Tensor, dosage: Tensor | None = None) -> dict[str, Tensor]:
        out = super().forward(x, t, dosage)
        out["propensity"] = torch.sigmoid(self.propensity(out["representation"])).squeeze(-1)
        return out

    def loss(self, output: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        y = self.standardise_outcome(batch["y"])
        t = batch["t"].float()
        mse = torch.mean((output["outcome"] - y) ** 2)
        g = output["propensity"]
        bce = nn.functional.binary_cross_entropy(g.clamp(1e-6, 1 - 1e-6), t)
        g_squeezed = (g + 0.01) / 1.02
        clever = t / g_squeezed - (1.0 - t) / (1.0 - g_squeezed)
        targeted = torch.mean((y - (output["outcome"] + self.epsilon * clever)) ** 2)
        loss = mse + self.propensity_weight * bce + self.targeted_weight * targeted
        return loss, {"mse": mse, "bce": bce, "targeted": targeted}


# -- VCNet ---------------------------------------------------------------------------------------------------
def truncated_power_basis(t: Tensor, degree: int, knots: tuple[float, ...]) -> Tensor:
    """``[1, t, ..., t^degree, (t - k_1)_+^degree, ...]`` of ``t`` in [0, 1]: ``[B, degree + 1 + #knots]``."""
    if degree < 1:
        raise ConfigError(f"spline degree must be >= 1, got {degree}")
    powers = [torch.ones_like(t)] + [t**p for p in range(1, degree + 1)]
    hinges = [torch.relu(t - k) ** degree for k in knots]
    return torch.stack(powers + hinges, 1)


class VaryingCoefficientLayer(nn.Module):
    """VCNet's ``Dynamic_FC``: ``out_o = sum_b B_b(t) (sum_i z_i W[i, o, b] + c[o, b])``."""

    def __init__(
        self, in_dim: int, out_dim: int, degree: int, knots: tuple[float, ...], activation: bool
    ) -> None:
        super().__init__()
        self.degree, self.knots = degree, tuple(knots)
        n_basis = degree + 1 + len(knots)
        self.weight = nn.Parameter(torch.randn(in_dim, out_dim, n_basis))  # VCNet: N(0, 1)
        self.bias = nn.Parameter(torch.zeros(out_dim, n_basis))
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        basis = truncated_power_basis(t, self.degree, self.knots)  # [B, nb]
        out = torch.einsum("bi,iok,bk->bo", z, self.weight, basis) + basis @ self.bias.T
        return self.activation(out)


class DensityHead(nn.Module):
    """VCNet's ``Density_Block``: softmax over ``grid + 1`` points of [0, 1], interpolated at ``t``."""

    def __init__(self, in_dim: int, grid: int = 10) -> None:
        super().__init__()
        self.grid = grid
        self.linear = nn.Linear(in_dim, grid + 1)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        probs = torch.softmax(self.linear(z), 1)
        position = t.clamp(0.0, 1.0) * self.grid
        upper = torch.ceil(position).long().clamp(max=self.grid)
        lower = (upper - 1).clamp(min=0)
        weight = 1.0 - (upper.float() - position)
        rows = torch.arange(len(z), device=z.device)
        low, high = probs[rows, lower], probs[rows, upper]
        return low + (high - low) * weight


@REGISTRY.models.register("vcnet", "VCNet: varying-coefficient spline head + density head (Nie et al., 2021)")
class VCNet(CausalModel):
    supported_treatments = ("continuous",)

    def __init__(
        self,
        n_covariates: int,
        treatment: str = "continuous",
        n_treatments: int = 1,
        hidden: int = 50,
        degree: int = 2,
        knots: tuple[float, ...] = (0.33, 0.66),
        grid: int = 10,
        density_weight: float = 0.5,
    ) -> None:
        super().__init__(n_covariates, treatment, n_treatments)
        self.representation = _mlp([n_covariates, hidden, hidden], nn.ReLU)
        self.density = DensityHead(hidden, grid)
        self.hidden_layer = VaryingCoefficientLayer(hidden, hidden, degree, tuple(knots), activation=True)
        self.output_layer = VaryingCoefficientLayer(hidden, 1, degree, tuple(knots), activation=False)
        self.density_weight = density_weight
        for module in self.modules():  # VCNet's _initialize_weights
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, t: Tensor, dosage: Tensor | None = None) -> dict[str, Tensor]:
        z = self.representation(self.scale_covariates(x.float()))
        ts = self.scale_continuous(t.float())
        hidden = self.hidden_layer(z, ts)
        outcome = self.output_layer(hidden, ts).squeeze(-1)
        return {"outcome": outcome, "representation": z, "density": self.density(z, ts)}

    def loss(self, output: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        mse = torch.mean((output["outcome"] - self.standardise_outcome(batch["y"])) ** 2)
        log_density = torch.log(output["density"] + 1e-6).mean()
        return mse - self.density_weight * log_density, {"mse": mse, "log_density": log_density}


# -- LightGBM meta-learners ----------------------------------------------------------------------------------
class _LightGBMLearner(EffectEstimatorMixin, BaseEstimator):
    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _regressor(self):
        import lightgbm

        return lightgbm.LGBMRegressor(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            verbose=-1,
        )

    def _prepare_fit(self, X, t, y, dosage):
        X, t, y, dosage = check_fit_inputs(X, t, y, dosage)
        self.treatment_, self.n_treatments_ = infer_treatment(t, dosage)
        self.n_features_in_ = X.shape[1]
        return X, check_treatment(t, self.treatment_, self.n_treatments_), y, dosage

    def _prepare_predict(self, X, t, dosage):
        self._check_is_fitted()
        X = check_covariates(X, n_features=self.n_features_in_)
        t = check_treatment(self._broadcast_treatment(t, len(X), "t"), self.treatment_, self.n_treatments_)
        if self.treatment_ == "dosage":
            if dosage is None:
                raise CausalInputError("this estimator was fitted with dosages: pass dosage=...")
            dosage = self._broadcast_treatment(dosage, len(X), "dosage")
        return X, t, dosage


@REGISTRY.models.register(
    "lgbm-s-learner", "LightGBM S-learner: one model on [x, t] (300 trees, lr 0.05, 15 leaves)"
)
class LightGBMSLearner(_LightGBMLearner):
    """One gradient-boosted model of ``y`` on the covariates and the treatment (one-hot for classes)."""

    def _design(self, X: np.ndarray, t: np.ndarray, dosage: np.ndarray | None) -> np.ndarray:
        if self.treatment_ in ("categorical", "dosage"):
            columns = [X, np.eye(self.n_treatments_)[t]]
        else:
            columns = [X, t[:, None].astype(np.float64)]
        if dosage is not None:
            columns.append(dosage[:, None])
        return np.column_stack(columns)

    def fit(self, X, t, y, dosage=None) -> LightGBMSLearner:
        X, t, y, dosage = self._prepare_fit(X, t, y, dosage)
        self.model_ = self._regressor().fit(self._design(X, t, dosage), y)
        return self

    def predict_outcome(self, X, t, dosage=None) -> np.ndarray:
        X, t, dosage = self._prepare_predict(X, t, dosage)
        return self.model_.predict(self._design(X, t, dosage))


@REGISTRY.models.register(
    "lgbm-t-learner", "LightGBM T-learner: one model per treatment (300 trees, lr 0.05, 15 leaves)"
)
class LightGBMTLearner(_LightGBMLearner):
    """One gradient-boosted model per treatment value, each fitted on its own arm."""

    def fit(self, X, t, y, dosage=None) -> LightGBMTLearner:
        X, t, y, dosage = self._prepare_fit(X, t, y, dosage)
        if self.treatment_ not in ("binary", "categorical"):
            raise CausalInputError(
                f"the T-learner needs a discrete treatment without dosage, got {self.treatment_}"
            )
        self.models_ = []
        for k in range(self.n_treatments_):
            arm = t == k
            if arm.sum() < 2:
                raise CausalInputError(
                    f"treatment {k} has {int(arm.sum())} sample(s); the T-learner needs >= 2 per arm"
                )
            self.models_.append(self._regressor().fit(X[arm], y[arm]))
        return self

    def predict_outcome(self, X, t, dosage=None) -> np.ndarray:
        X, t, _ = self._prepare_predict(X, t, dosage)
        out = np.empty(len(X))
        for k, model in enumerate(self.models_):
            rows = t == k
            if rows.any():
                out[rows] = model.predict(X[rows])
        return out


# -- EconML --------------------------------------------------------------------------------------------------
def _require_econml():
    try:
        import econml  # noqa: F401
    except ImportError:
        raise ConfigError(
            "EconML is not installed: pip install -c constraints.txt econml (interplay-tabular[econml])"
        ) from None


class _EconMLLearner(EffectEstimatorMixin, BaseEstimator):
    """EconML effect estimators behind ``fit(X, t, y)`` / ``effect(X, t0, t1)``; no outcome levels."""

    def _build(self):
        raise NotImplementedError

    def fit(self, X, t, y, dosage=None):
        _require_econml()
        if dosage is not None:
            raise CausalInputError(f"{type(self).__name__} takes no dosage")
        X, t, y, _ = check_fit_inputs(X, t, y)
        self.treatment_, self.n_treatments_ = infer_treatment(t, None)
        self.n_features_in_ = X.shape[1]
        self.model_ = self._build()
        t = check_treatment(t, self.treatment_, self.n_treatments_)
        self.model_.fit(y, t, X=X)
        return self

    def predict_outcome(self, X, t, dosage=None) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} estimates effects, not outcome levels: use effect()"
        )

    def effect(self, X, t0: Any = 0, t1: Any = 1, dosage0: Any = None, dosage1: Any = None) -> np.ndarray:
        self._check_is_fitted()
        X = check_covariates(X, n_features=self.n_features_in_)
        if not (np.ndim(t0) == 0 and np.ndim(t1) == 0):
            raise CausalInputError(f"{type(self).__name__}.effect takes scalar t0 and t1")
        return np.asarray(self.model_.effect(X, T0=t0, T1=t1)).reshape(-1)

    def dose_response(self, X, grid, t=None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} estimates effects, not dose-response levels")


@REGISTRY.models.register("econml-drlearner", "EconML DRLearner (doubly robust) with LightGBM outcome models")
class EconMLDRLearner(_EconMLLearner):
    """Doubly robust learner: LightGBM outcome regressions and final stage, a logistic propensity
    clipped at ``min_propensity`` (a boosted classifier's near-0/1 propensities blow up the
    pseudo-outcomes: on IHDP its out-of-sample sqrt(PEHE) exceeded 40)."""

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_propensity: float = 0.01,
        random_state: int = 0,
    ):
        self.n_estimators, self.learning_rate, self.num_leaves = n_estimators, learning_rate, num_leaves
        self.min_propensity, self.random_state = min_propensity, random_state

    def _build(self):
        import lightgbm
        from econml.dr import DRLearner
        from sklearn.linear_model import LogisticRegression

        kw = dict(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            random_state=self.random_state, n_jobs=1, verbose=-1,
        )  # fmt: skip
        return DRLearner(
            model_propensity=LogisticRegression(max_iter=2000),
            model_regression=lightgbm.LGBMRegressor(**kw),
            model_final=lightgbm.LGBMRegressor(**kw),
            min_propensity=self.min_propensity,
            random_state=self.random_state,
        )


@REGISTRY.models.register("econml-causal-forest", "EconML CausalForestDML with LightGBM nuisances")
class EconMLCausalForest(_EconMLLearner):
    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 5, random_state: int = 0):
        self.n_estimators, self.min_samples_leaf, self.random_state = (
            n_estimators,
            min_samples_leaf,
            random_state,
        )

    def _build(self):
        import lightgbm
        from econml.dml import CausalForestDML

        discrete = self.treatment_ != "continuous"
        kw = dict(
            n_estimators=200,
            learning_rate=0.05,
            num_leaves=15,
            random_state=self.random_state,
            n_jobs=1,
            verbose=-1,
        )
        return CausalForestDML(
            model_y=lightgbm.LGBMRegressor(**kw),
            model_t=lightgbm.LGBMClassifier(**kw) if discrete else lightgbm.LGBMRegressor(**kw),
            discrete_treatment=discrete,
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
        )
