"""``OrionMSPClassifier``: scikit-learn's fit / predict / predict_proba over a pre-trained Orion-MSP.

    from interplay.tabular.icl import OrionMSPClassifier

    clf = OrionMSPClassifier(checkpoint="runs/tabular/orion-msp/<time>/checkpoints/last.pt")
    clf.fit(X_train, y_train)          # stores the context; no gradient step
    proba = clf.predict_proba(X_test)  # one forward pass per ensemble member

In-context learning (Orion-MSP, Bouadi et al., 2025; TabICL, Qu et al., 2025): ``fit`` validates the
data, encodes the labels (``classes_``), imputes missing values with the training column means
(NaN allowed; infinities are an error), standardises with training statistics and keeps the result
as the context; ``predict_proba`` runs the pre-trained model with the training rows as context and
the new rows as queries. Test rows are scored independently of each other (the model's attention
never lets one test row see another), so chunking them (``max_test_rows``) changes nothing.

Ensemble (as TabICL / Orion-MSP's released classifier, optional): ``n_estimators`` members, member 0
with the original feature order and labels, the others with a random feature permutation and a cyclic
shift of the class indices (member ``e`` shifts by ``e mod C``, undone on its logits); the members'
logits are averaged, divided by ``softmax_temperature`` and normalised. Permutations come from
``random_state``. ``batch_size`` members share a forward pass.

Limits of the model (``max_classes`` classes, ``max_features`` features; TabICL's hierarchical
classification for more classes is not implemented) raise :class:`OrionInputError` (a
:class:`~interplay.core.errors.DataError` that is also a ``ValueError``) saying what to do.

``checkpoint=None`` builds a randomly initialised model from ``model_params`` (seeded by
``random_state``): useful for tests and API checks; it predicts near chance.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from interplay.core.errors import DataError
from interplay.tabular.icl.model import OrionMSP, OrionMSPConfig

__all__ = ["OrionInputError", "OrionMSPClassifier", "SMALL_MODEL"]

# the randomly initialised model of checkpoint=None (tests, API checks)
SMALL_MODEL = dict(
    embed_dim=16,
    col_num_blocks=1,
    col_nhead=2,
    col_num_inds=8,
    row_num_blocks=1,
    row_nhead=2,
    perc_num_latents=4,
    perc_layers=1,
    icl_num_blocks=2,
    icl_nhead=2,
)


class OrionInputError(DataError, ValueError):
    """Input the classifier cannot use (too many classes or features, bad shapes)."""


class OrionMSPClassifier(ClassifierMixin, BaseEstimator):
    """Tabular in-context classifier over a pre-trained :class:`OrionMSP` (see the module docstring).

    Args:
        checkpoint: a pre-training checkpoint (``pretrain``'s ``.pt``); ``None``: random model.
        n_estimators: ensemble members (feature permutations x class shifts); 1 = no ensemble.
        device: torch device for inference.
        batch_size: ensemble members per forward pass.
        random_state: seed of the permutations (and of the random model when ``checkpoint=None``).
        softmax_temperature: logits are divided by it before the softmax (released default 0.9).
        feature_shuffle, class_shift: which ensemble transforms to use.
        max_test_rows: test rows per forward pass (memory bound; results do not depend on it).
        model_params: :class:`OrionMSPConfig` fields of the random model (``checkpoint=None``).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        n_estimators: int = 4,
        device: str = "cpu",
        batch_size: int = 4,
        random_state: int | None = None,
        softmax_temperature: float = 0.9,
        feature_shuffle: bool = True,
        class_shift: bool = True,
        max_test_rows: int = 2048,
        model_params: dict | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.device = device
        self.batch_size = batch_size
        self.random_state = random_state
        self.softmax_temperature = softmax_temperature
        self.feature_shuffle = feature_shuffle
        self.class_shift = class_shift
        self.max_test_rows = max_test_rows
        self.model_params = model_params

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # imputed with the training means
        return tags

    # -- model ----------------------------------------------------------------------------------------
    def _build_model(self) -> OrionMSP:
        if self.checkpoint is not None:
            from interplay.tabular.icl.pretrain import load_pretrained

            return load_pretrained(self.checkpoint, self.device)
        if self.model_params is None:
            warnings.warn(
                "OrionMSPClassifier without a checkpoint uses a randomly initialised model (near-chance "
                "predictions); pre-train one with `interplay-tabular train --config orion-msp-prior`",
                UserWarning,
                stacklevel=3,
            )
        params = {**SMALL_MODEL, **(self.model_params or {})}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if self.random_state is None else int(self.random_state))
            model = OrionMSP(OrionMSPConfig(**params))
        return model.to(self.device).eval()

    def _check_params(self) -> None:
        problems = []
        if int(self.n_estimators) < 1:
            problems.append(f"n_estimators must be >= 1, got {self.n_estimators}")
        if int(self.batch_size) < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.max_test_rows) < 1:
            problems.append(f"max_test_rows must be >= 1, got {self.max_test_rows}")
        if not self.softmax_temperature > 0:
            problems.append(f"softmax_temperature must be > 0, got {self.softmax_temperature}")
        if problems:
            raise OrionInputError("OrionMSPClassifier: " + "; ".join(problems))

    # -- fit / predict --------------------------------------------------------------------------------
    def fit(self, X, y) -> OrionMSPClassifier:
        """Validate and store the context (no training: the model is pre-trained)."""
        self._check_params()
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64, y_numeric=False)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        model = self._build_model()
        max_classes, max_features = model.config.max_classes, model.config.max_features
        if len(self.classes_) > max_classes:
            raise OrionInputError(
                f"y has {len(self.classes_)} classes; this Orion-MSP model handles at most {max_classes} "
                "(max_classes): merge rare classes or wrap it in sklearn.multiclass.OneVsRestClassifier"
            )
        if X.shape[1] > max_features:
            raise OrionInputError(
                f"X has {X.shape[1]} features; this Orion-MSP model handles at most {max_features} "
                "(max_features): select or project features first (e.g. SelectKBest, PCA)"
            )
        with warnings.catch_warnings():  # an all-NaN column has no mean: it becomes 0
            warnings.simplefilter("ignore", RuntimeWarning)
            column_mean = np.nan_to_num(np.nanmean(X, axis=0), nan=0.0)
        X = np.where(np.isnan(X), column_mean, X)
        std = X.std(0)
        self.feature_mean_ = X.mean(0)
        self.feature_scale_ = np.where(std > 1e-12, std, 1.0)
        self.impute_values_ = column_mean
        self.X_context_ = ((X - self.feature_mean_) / self.feature_scale_).astype(np.float32)
        self.y_context_ = encoder.transform(y).astype(np.int64)
        self.model_ = model
        rng = np.random.default_rng(self.random_state)
        n_classes, n_features = len(self.classes_), X.shape[1]
        members = []
        for e in range(int(self.n_estimators)):
            order = np.arange(n_features)
            if e > 0 and self.feature_shuffle:
                order = rng.permutation(n_features)
            shift = e % n_classes if self.class_shift else 0
            members.append((order, shift))
        self.ensemble_ = members
        return self

    def _prepare(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        X = np.where(np.isnan(X), self.impute_values_, X)
        return ((X - self.feature_mean_) / self.feature_scale_).astype(np.float32)

    @torch.no_grad()
    def _member_logits(self, X: np.ndarray) -> np.ndarray:
        """``[members, n, C]`` logits of every member (class shifts undone)."""
        n_classes = len(self.classes_)
        device = torch.device(self.device)
        out = np.empty((len(self.ensemble_), len(X), n_classes), dtype=np.float64)
        step = int(self.batch_size)
        for first in range(0, len(self.ensemble_), step):
            members = self.ensemble_[first : first + step]
            y_train = torch.as_tensor(
                np.stack([(self.y_context_ + shift) % n_classes for _, shift in members]), device=device
            )
            for start in range(0, len(X), int(self.max_test_rows)):
                chunk = X[start : start + int(self.max_test_rows)]
                tables = np.stack(
                    [np.concatenate([self.X_context_, chunk])[:, order] for order, _ in members]
                )
                logits = self.model_(torch.as_tensor(tables, device=device), y_train, n_classes=n_classes)
                logits = logits[..., :n_classes].double().cpu().numpy()
                for i, (_, shift) in enumerate(members):
                    # member saw label k as (k + shift) mod C: its logit for k sits at (k + shift) mod C
                    out[first + i, start : start + len(chunk)] = np.roll(logits[i], -shift, axis=-1)
        return out

    def predict_proba(self, X) -> np.ndarray:
        X = self._prepare(X)
        if len(self.classes_) == 1:
            return np.ones((len(X), 1))
        logits = self._member_logits(X).mean(0) / float(self.softmax_temperature)
        logits -= logits.max(1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # before reading classes_: unfitted -> NotFittedError
        return self.classes_[proba.argmax(1)]
