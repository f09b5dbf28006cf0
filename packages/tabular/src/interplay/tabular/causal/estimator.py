"""Treatment-effect estimators with an EconML / scikit-learn API.

    from interplay.tabular.causal import TransTEERegressor

    est = TransTEERegressor(epochs=200).fit(X, t, y)       # t: 0/1, classes, or real doses
    tau = est.effect(X_new, t0=0, t1=1)                    # per-row effect mu(x, 1) - mu(x, 0)
    mu1 = est.predict_outcome(X_new, 1)                    # outcome level under t = 1
    curve = est.dose_response(X_new, grid=[0.1, 0.5, 0.9])  # average dose-response (continuous t)

The neural estimators (:class:`TransTEERegressor`, :class:`TARNetRegressor`,
:class:`DragonNetRegressor`, :class:`VCNetRegressor`) train the registered models with
:class:`~interplay.tabular.causal.tasks.TreatmentEffectTask` under Lightning: a validation split of
``val_fraction`` (stratified by treatment when it is discrete) is carved from the data given to
``fit`` and the weights of the epoch with the lowest validation factual MSE are kept. Treatment kind
is inferred (0/1 binary, small integers categorical, otherwise continuous; a ``dosage`` makes
(treatment, dosage) pairs) unless ``treatment=`` says it. Parameters follow scikit-learn's
conventions (``get_params`` / ``set_params`` / ``clone``), fitted attributes end in ``_``, and
training leaves the global random state untouched (``random_state`` seeds everything).

Training parameters shared by the neural estimators: ``epochs``, ``batch_size``, ``optimizer``
(``adam``, ``adamw`` or ``sgd``, the last with Nesterov momentum ``momentum``), ``lr``,
``weight_decay``, ``scheduler`` (``cosine``, ``step`` or ``none``), ``val_fraction``, ``val_every``
(validate every that many epochs), ``patience`` (early stopping after that many validations without
improvement; ``None``: off), ``adversary_lr`` / ``adversary_weight_decay`` (the propensity head's
SGD), ``random_state``, ``accelerator`` and ``verbose`` (a progress bar).

The LightGBM S- and T-learners and the EconML learners (same API) live in
:mod:`interplay.tabular.causal.baselines` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split

from interplay.core.train import EarlyStoppingConfig, OptimizerConfig, TrainerConfig
from interplay.tabular.causal.base import (
    EffectEstimatorMixin,
    check_covariates,
    check_fit_inputs,
    check_treatment,
    infer_treatment,
)
from interplay.tabular.causal.baselines import (
    EconMLCausalForest,
    EconMLDRLearner,
    LightGBMSLearner,
    LightGBMTLearner,
)
from interplay.tabular.causal.data import TREATMENT_KINDS, CausalData, CausalInputError
from interplay.tabular.causal.tasks import CausalDataModule, TreatmentEffectTask, fit_task
from interplay.tabular.registry import REGISTRY

__all__ = [
    "DragonNetRegressor",
    "EconMLCausalForest",
    "EconMLDRLearner",
    "LightGBMSLearner",
    "LightGBMTLearner",
    "NeuralEffectRegressor",
    "TARNetRegressor",
    "TransTEERegressor",
    "VCNetRegressor",
]


class NeuralEffectRegressor(EffectEstimatorMixin, BaseEstimator):
    """Base of the neural estimators; subclasses name the registered model and its parameters."""

    model_name: str = ""
    model_keys: tuple[str, ...] = ()

    def _model_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.model_keys}

    def _check_training_params(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise CausalInputError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.batch_size < 1:
            raise CausalInputError(
                f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}"
            )
        if self.treatment not in ("auto", *TREATMENT_KINDS):
            raise CausalInputError(
                f"treatment must be 'auto' or one of {', '.join(TREATMENT_KINDS)}, got {self.treatment!r}"
            )

    def _splits(self, data: CausalData) -> dict[str, np.ndarray]:
        index = np.arange(len(data))
        stratify = None
        if data.treatment != "continuous":
            counts = np.bincount(data.t, minlength=data.n_treatments)
            if counts.min() >= 2:
                stratify = data.t
        train, val = train_test_split(
            index, test_size=self.val_fraction, random_state=self.random_state, stratify=stratify
        )
        return {"train": np.sort(train), "val": np.sort(val), "test": np.array([], dtype=np.int64)}

    def fit(self, X: Any, t: Any, y: Any, dosage: Any = None) -> NeuralEffectRegressor:
        """Fit on covariates ``X [n, p]``, treatments ``t [n]``, outcomes ``y [n]`` (and dosages ``[n]``)."""
        self._check_training_params()
        X, t, y, dosage = check_fit_inputs(X, t, y, dosage)
        if self.treatment == "auto":
            kind, n_treatments = infer_treatment(t, dosage)
        else:
            kind = self.treatment
            n_treatments = 1 if kind == "continuous" else max(2, int(np.max(t)) + 1)
        t = check_treatment(t, kind, n_treatments)
        data = CausalData(
            x=X, t=t, y=y, treatment=kind, n_treatments=n_treatments, dosage=dosage, name="fit data"
        )
        datamodule = CausalDataModule(
            data, self._splits(data), batch_size=self.batch_size, seed=self.random_state
        )
        optimizer = OptimizerConfig(
            name=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            scheduler=self.scheduler,
        )
        trainer = TrainerConfig(
            max_epochs=self.epochs,
            accelerator=self.accelerator,
            devices=1,
            progress_bar=bool(self.verbose),
            tensorboard=False,
            early_stopping=EarlyStoppingConfig(
                enabled=self.patience is not None, patience=self.patience or 0
            ),
            check_val_every_n_epoch=self.val_every,
            log_every_n_steps=1,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            model = REGISTRY.models.create(
                self.model_name,
                n_covariates=X.shape[1],
                treatment=kind,
                n_treatments=n_treatments,
                **self._model_params(),
            )
            task = TreatmentEffectTask(
                model,
                optimizer,
                adversary_lr=self.adversary_lr,
                adversary_weight_decay=self.adversary_weight_decay,
            )
            summary = fit_task(task, datamodule, trainer)
        self.model_ = task.model.cpu().eval()
        self.treatment_, self.n_treatments_, self.n_features_in_ = kind, n_treatments, X.shape[1]
        self.best_epoch_, self.best_val_loss_ = summary["best_epoch"], summary["best_val"]
        self.fit_seconds_ = summary["fit_seconds"]
        return self

    def predict_outcome(self, X: Any, t: Any, dosage: Any = None) -> np.ndarray:
        """Predicted outcome ``mu(x, t[, dosage])`` per row; ``t`` (and ``dosage``) scalar or ``[n]``."""
        self._check_is_fitted()
        X = check_covariates(X, n_features=self.n_features_in_)
        t = check_treatment(self._broadcast_treatment(t, len(X), "t"), self.treatment_, self.n_treatments_)
        if self.treatment_ == "dosage":
            if dosage is None:
                raise CausalInputError("this estimator was fitted with dosages: pass dosage=...")
            dosage = self._broadcast_treatment(dosage, len(X), "dosage")
        out = []
        with torch.no_grad():
            for start in range(0, len(X), 4096):
                rows = slice(start, start + 4096)
                tt = torch.as_tensor(
                    t[rows], dtype=torch.float32 if self.treatment_ == "continuous" else torch.long
                )
                dd = None if dosage is None else torch.as_tensor(dosage[rows], dtype=torch.float32)
                xx = torch.as_tensor(X[rows], dtype=torch.float32)
                out.append(self.model_.predict_outcome(xx, tt, dd).double().numpy())
        return np.concatenate(out)


class TransTEERegressor(NeuralEffectRegressor):
    """TransTEE (Zhang et al., 2023) as an estimator; model arguments as :class:`TransTEE`.

    Training defaults are the budget this repository's IHDP benchmark uses (Adam, cosine schedule);
    the paper's are SGD with Nesterov momentum 0.9, weight decay 5e-3, lr 5e-4, cosine, 1,500 epochs,
    batch 128 (``optimizer="sgd", lr=5e-4, weight_decay=5e-3, epochs=1500``).
    """

    model_name = "transtee"
    model_keys = (
        "dim",
        "heads",
        "ff_dim",
        "layers",
        "dropout",
        "column_embedding",
        "norm",
        "head",
        "adversarial",
        "adversarial_weight",
        "propensity_features",
    )

    def __init__(
        self,
        *,
        treatment: str = "auto",
        dim: int = 16,
        heads: int = 2,
        ff_dim: int = 50,
        layers: int = 1,
        dropout: float = 0.0,
        column_embedding: bool = True,
        norm: str = "batch",
        head: str = "linear",
        adversarial: str = "tr",
        adversarial_weight: float = 0.5,
        propensity_features: str = "encoder",
        epochs: int = 300,
        batch_size: int = 128,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: str = "cosine",
        val_fraction: float = 0.1,
        patience: int | None = None,
        val_every: int = 1,
        adversary_lr: float = 1e-3,
        adversary_weight_decay: float = 5e-3,
        random_state: int = 0,
        accelerator: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.treatment = treatment
        self.dim, self.heads, self.ff_dim, self.layers, self.dropout = dim, heads, ff_dim, layers, dropout
        self.column_embedding, self.norm, self.head = column_embedding, norm, head
        self.adversarial, self.adversarial_weight = adversarial, adversarial_weight
        self.propensity_features = propensity_features
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.weight_decay, self.momentum, self.scheduler = weight_decay, momentum, scheduler
        self.val_fraction, self.patience, self.val_every = val_fraction, patience, val_every
        self.adversary_lr, self.adversary_weight_decay = adversary_lr, adversary_weight_decay
        self.random_state, self.accelerator, self.verbose = random_state, accelerator, verbose


class TARNetRegressor(NeuralEffectRegressor):
    """TARNet (Shalit et al., 2017): binary or categorical treatments."""

    model_name = "tarnet"
    model_keys = ("hidden", "layers", "head_hidden", "head_layers", "dropout", "adversarial")

    def __init__(
        self,
        *,
        treatment: str = "auto",
        hidden: int = 200,
        layers: int = 3,
        head_hidden: int = 100,
        head_layers: int = 2,
        dropout: float = 0.0,
        adversarial: str = "none",
        epochs: int = 300,
        batch_size: int = 128,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: str = "cosine",
        val_fraction: float = 0.1,
        patience: int | None = None,
        val_every: int = 1,
        adversary_lr: float = 1e-3,
        adversary_weight_decay: float = 5e-3,
        random_state: int = 0,
        accelerator: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.treatment = treatment
        self.hidden, self.layers, self.head_hidden, self.head_layers = (
            hidden,
            layers,
            head_hidden,
            head_layers,
        )
        self.dropout, self.adversarial = dropout, adversarial
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.weight_decay, self.momentum, self.scheduler = weight_decay, momentum, scheduler
        self.val_fraction, self.patience, self.val_every = val_fraction, patience, val_every
        self.adversary_lr, self.adversary_weight_decay = adversary_lr, adversary_weight_decay
        self.random_state, self.accelerator, self.verbose = random_state, accelerator, verbose


class DragonNetRegressor(NeuralEffectRegressor):
    """DragonNet (Shi et al., 2019) with targeted regularisation: binary treatments."""

    model_name = "dragonnet"
    model_keys = (
        "hidden",
        "layers",
        "head_hidden",
        "head_layers",
        "dropout",
        "propensity_weight",
        "targeted_weight",
    )

    def __init__(
        self,
        *,
        treatment: str = "auto",
        hidden: int = 200,
        layers: int = 3,
        head_hidden: int = 100,
        head_layers: int = 2,
        dropout: float = 0.0,
        propensity_weight: float = 1.0,
        targeted_weight: float = 1.0,
        epochs: int = 300,
        batch_size: int = 128,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: str = "cosine",
        val_fraction: float = 0.1,
        patience: int | None = None,
        val_every: int = 1,
        random_state: int = 0,
        accelerator: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.treatment = treatment
        self.hidden, self.layers, self.head_hidden, self.head_layers = (
            hidden,
            layers,
            head_hidden,
            head_layers,
        )
        self.dropout, self.propensity_weight, self.targeted_weight = (
            dropout,
            propensity_weight,
            targeted_weight,
        )
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.weight_decay, self.momentum, self.scheduler = weight_decay, momentum, scheduler
        self.val_fraction, self.patience, self.val_every = val_fraction, patience, val_every
        self.random_state, self.accelerator, self.verbose = random_state, accelerator, verbose

    adversary_lr = 1e-3  # DragonNet has no adversary; the task still takes these
    adversary_weight_decay = 5e-3


class VCNetRegressor(NeuralEffectRegressor):
    """VCNet (Nie et al., 2021): continuous treatments (doses), varying-coefficient spline head."""

    model_name = "vcnet"
    model_keys = ("hidden", "degree", "knots", "grid", "density_weight")

    def __init__(
        self,
        *,
        treatment: str = "continuous",
        hidden: int = 50,
        degree: int = 2,
        knots: tuple[float, ...] = (0.33, 0.66),
        grid: int = 10,
        density_weight: float = 0.5,
        epochs: int = 300,
        batch_size: int = 128,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: str = "cosine",
        val_fraction: float = 0.1,
        patience: int | None = None,
        val_every: int = 1,
        random_state: int = 0,
        accelerator: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.treatment = treatment
        self.hidden, self.degree, self.knots, self.grid = hidden, degree, knots, grid
        self.density_weight = density_weight
        self.epochs, self.batch_size, self.optimizer, self.lr = epochs, batch_size, optimizer, lr
        self.weight_decay, self.momentum, self.scheduler = weight_decay, momentum, scheduler
        self.val_fraction, self.patience, self.val_every = val_fraction, patience, val_every
        self.random_state, self.accelerator, self.verbose = random_state, accelerator, verbose

    adversary_lr = 1e-3
    adversary_weight_decay = 5e-3
