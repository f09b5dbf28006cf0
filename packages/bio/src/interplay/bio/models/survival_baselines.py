"""Survival baselines of MOTCat's comparison: SNN, ABMIL, MCAT and an elastic-net Cox model on omics.

All neural baselines end in the discrete-time head of :func:`~interplay.bio.models.motcat.survival_outputs`
(hazards ``sigmoid(logits)``, ``S_t = prod_{s<=t} (1 - h_s)``, risk ``-sum_t S_t``) and follow the
MCAT / MOTCat code (``models/model_genomic.py``, ``model_set_mil.py``, ``model_coattn.py``):

* **SNN** (Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017; MCAT's genomic
  baseline): all selected genomic features concatenated, four ``Linear -> ELU -> AlphaDropout``
  blocks of width 256, a linear layer to the bins; LeCun-normal initialisation (``init_max_weights``).
* **ABMIL** (Ilse et al., "Attention-based Deep Multiple Instance Learning", ICML 2018, Eq. 9 gated
  attention; MCAT's ``MIL_Attention_FC_surv``): ``Linear(1024, 512) -> ReLU -> Dropout``, gated
  attention pooling (hidden 256) over the patches, ``rho = Linear(512, 256) -> ReLU -> Dropout``,
  a linear layer to the bins.
* **MCAT** (Chen et al., "Multimodal Co-Attention Transformer for Survival Prediction in Gigapixel
  Whole Slide Images", ICCV 2021, Eq. 1): genomic-guided co-attention
  ``H_hat_p = softmax(W_q H_g (W_k H_p)^T / sqrt(d)) W_v H_p`` — the genomic tokens are the queries
  over all patch tokens (one head, as MCAT), i.e. the dense softmax counterpart of MOTCat's
  transport plan — followed by the same transformers, pooling and fusion as MOTCat.
* **Cox (elastic net)** on the omics table: Simon et al., "Regularization Paths for Cox's
  Proportional Hazards Model via Coordinate Descent", J. Stat. Softw. 2011 (scikit-survival's
  ``CoxnetSurvivalAnalysis``): maximise the partial log-likelihood
  ``sum_{i: event} [x_i b - log sum_{j: t_j >= t_i} exp(x_j b)]`` minus
  ``alpha (l1_ratio |b|_1 + (1 - l1_ratio) |b|_2^2 / 2)``; ``alpha`` is chosen on a validation set
  (given, or carved from the training set) by the concordance index.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from interplay.bio.models.motcat import (
    GatedAttentionPooling,
    MultimodalCoAttentionSurvival,
    _check_dropout,
    _check_omic_sizes,
    check_bag,
    check_finite,
    init_max_weights,
    snn_encoder,
    survival_outputs,
    unpack_item,
)
from interplay.bio.registry import REGISTRY
from interplay.core.errors import ConfigError, DataError
from interplay.core.nn import MultiHeadAttention

__all__ = ["ABMIL", "MCAT", "SNN", "CoxOmicsBaseline"]


@REGISTRY.models.register("snn", "SNN: self-normalising network on the concatenated omics (MCAT's baseline)")
class SNN(nn.Module):
    """Omics-only self-normalising network.

    Args:
        omic_input_dim: number of genomic features; or give ``omic_sizes`` (the groups are concatenated).
        omic_sizes: sizes of the genomic groups when the item carries a list of groups.
        n_bins: discrete survival bins.
        hidden: widths of the SNN blocks (MCAT's ``small``: four blocks of 256).
        dropout: AlphaDropout rate (0.25).

    ``forward(item)`` / ``forward(omics=...)``: ``omics`` is one vector ``[F]``, a batch ``[B, F]`` or a
    list of group vectors (concatenated); returns ``logits``, ``hazards``, ``survival`` ``[B, n_bins]``
    and ``risk [B]`` (``B = 1`` for a vector).
    """

    def __init__(
        self,
        omic_input_dim: int | None = None,
        *,
        omic_sizes: Sequence[int] | None = None,
        n_bins: int = 4,
        hidden: Sequence[int] = (256, 256, 256, 256),
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if omic_sizes is not None:
            sizes = _check_omic_sizes(omic_sizes)
            if omic_input_dim is not None and omic_input_dim != sum(sizes):
                raise ConfigError(f"omic_input_dim={omic_input_dim} but sum(omic_sizes)={sum(sizes)}")
            omic_input_dim = sum(sizes)
        if not isinstance(omic_input_dim, int) or isinstance(omic_input_dim, bool) or omic_input_dim < 1:
            raise ConfigError(
                f"SNN needs omic_input_dim (a positive int) or omic_sizes; got {omic_input_dim!r}"
            )
        if not hidden:
            raise ConfigError("hidden must list at least one width")
        _check_dropout(dropout)
        self.omic_input_dim, self.n_bins = omic_input_dim, n_bins
        self.encoder = snn_encoder(omic_input_dim, tuple(hidden), dropout)
        self.classifier = nn.Linear(hidden[-1], n_bins)
        init_max_weights(self)

    def forward(self, item: Mapping[str, Any] | None = None, *, omics: Any = None) -> dict[str, Tensor]:
        _, omics, prefix = unpack_item(item, None, omics)
        features = self._features(omics, prefix)
        return survival_outputs(self.classifier(self.encoder(features)))

    def _features(self, omics: Any, prefix: str) -> Tensor:
        if omics is None:
            raise DataError(f"{prefix}the item has no 'omics'; SNN needs the genomic features")
        if isinstance(omics, Sequence) and not isinstance(omics, Tensor):
            if not all(isinstance(group, Tensor) for group in omics):
                raise DataError(f"{prefix}'omics' must hold tensors")
            # collated groups are [1, size]; plain groups [size]
            omics = torch.cat([g if g.ndim == 2 else g.unsqueeze(0) for g in omics], dim=-1)
        if not isinstance(omics, Tensor):
            raise DataError(
                f"{prefix}'omics' must be a tensor or a list of tensors; got {type(omics).__name__}"
            )
        features = omics.unsqueeze(0) if omics.ndim == 1 else omics
        if features.ndim != 2 or features.shape[-1] != self.omic_input_dim:
            raise DataError(
                f"{prefix}'omics' must have {self.omic_input_dim} features (omic_input_dim); "
                f"got shape {tuple(omics.shape)}"
            )
        check_finite(features, "omics", prefix)
        return features.to(self.classifier.weight.dtype)


@REGISTRY.models.register(
    "abmil", "ABMIL: gated-attention multiple-instance learning on WSI patches (Ilse et al., 2018)"
)
class ABMIL(nn.Module):
    """Path-only attention MIL (MCAT's ``MIL_Attention_FC_surv`` without fusion).

    Args:
        n_bins: discrete survival bins.
        path_input_dim: patch feature width (1024).
        hidden: width after the first layer (512) and of the attention / ``rho`` layers (256).
        dropout: dropout rate (0.25).

    ``forward(item)`` / ``forward(path=...)`` returns the survival head outputs (``[1, n_bins]``,
    risk ``[1]``) and ``path_attention [1, N]`` (softmax weights over the patches).
    """

    def __init__(
        self,
        *,
        n_bins: int = 4,
        path_input_dim: int = 1024,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if len(hidden) != 2:
            raise ConfigError(f"hidden must be (feature width, attention width); got {list(hidden)}")
        _check_dropout(dropout)
        width, attention = hidden
        self.path_input_dim, self.n_bins = path_input_dim, n_bins
        self.encoder = nn.Sequential(nn.Linear(path_input_dim, width), nn.ReLU(), nn.Dropout(dropout))
        self.pooling = GatedAttentionPooling(width, attention, dropout)
        self.rho = nn.Sequential(nn.Linear(width, attention), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(attention, n_bins)

    def forward(
        self, item: Mapping[str, Any] | None = None, *, path: Tensor | None = None
    ) -> dict[str, Tensor]:
        path, _, prefix = unpack_item(item, path, None)
        bag = check_bag(path, self.path_input_dim, prefix).to(self.classifier.weight.dtype)
        tokens = self.encoder(bag)
        if not bool(torch.isfinite(tokens.detach().sum())):
            check_finite(bag, "path", prefix)
        pooled, weights = self.pooling(tokens.unsqueeze(0))
        outputs = survival_outputs(self.classifier(self.rho(pooled)))
        outputs["path_attention"] = weights
        return outputs


@REGISTRY.models.register(
    "mcat", "MCAT: genomic-guided dense co-attention over WSI patches for survival (Chen et al., 2021)"
)
class MCAT(MultimodalCoAttentionSurvival):
    """MCAT: MOTCat's network with dense softmax co-attention in place of optimal transport.

    Args are those of :class:`~interplay.bio.models.motcat.MOTCat` without the OT ones, plus
    ``coattention_heads`` (1, as MCAT). ``forward(..., return_coattention=True)`` also returns the
    co-attention weights ``coattention [heads, M, N]`` (computed again from the projections, so it
    costs one more ``N x dim`` projection).
    """

    def __init__(
        self,
        omic_sizes: Sequence[int],
        *,
        n_bins: int = 4,
        fusion: str = "concat",
        dropout: float = 0.25,
        coattention_heads: int = 1,
        path_input_dim: int = 1024,
        dim: int = 256,
        heads: int = 8,
        ff_dim: int = 512,
        layers: int = 2,
    ) -> None:
        super().__init__(
            omic_sizes,
            n_bins=n_bins,
            fusion=fusion,
            dropout=dropout,
            path_input_dim=path_input_dim,
            dim=dim,
            heads=heads,
            ff_dim=ff_dim,
            layers=layers,
        )
        if dim % coattention_heads:
            raise ConfigError(f"dim={dim} must be divisible by coattention_heads={coattention_heads}")
        # MCAT's co-attention: nn.MultiheadAttention(256, num_heads=1) without dropout
        self.coattention = MultiHeadAttention(dim, coattention_heads)
        self._return_coattention = False

    def coattend(self, path_tokens: Tensor, omic_tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``softmax(Q K^T / sqrt(d)) V`` with ``Q`` from the genomic tokens and ``K, V`` from the patches."""
        coattended = self.coattention(omic_tokens.unsqueeze(0), path_tokens.unsqueeze(0))[0]
        if not self._return_coattention:
            return coattended, {}
        attn = self.coattention
        q = attn.q_proj(omic_tokens).view(-1, attn.heads, attn.head_dim).transpose(0, 1)
        k = attn.kv_proj(path_tokens).view(-1, 2, attn.kv_heads, attn.head_dim)[:, 0].transpose(0, 1)
        k = k.repeat_interleave(attn.heads // attn.kv_heads, dim=0)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim), dim=-1)
        return coattended, {"coattention": weights}

    def forward(
        self,
        item: Mapping[str, Any] | None = None,
        *,
        path: Tensor | None = None,
        omics: Any = None,
        return_coattention: bool = False,
    ) -> dict[str, Tensor]:
        self._return_coattention = return_coattention
        try:
            return super().forward(item, path=path, omics=omics)
        finally:
            self._return_coattention = False


# --------------------------------------------------------------------------------------------------
# elastic-net Cox on omics (no torch)


class CoxOmicsBaseline:
    """Elastic-net Cox proportional hazards on the omics table (scikit-survival's Coxnet).

    Args:
        l1_ratio: elastic-net mix (``1`` = lasso); 0.5 by default, 0.9 is the other usual choice.
        n_alphas: length of the regularisation path.
        alpha_min_ratio: smallest alpha as a fraction of the largest (sksurv's ``"auto"`` default).
        validation_fraction: share of the training cases held out to choose ``alpha`` when ``fit``
            gets no validation set (stratified by event; the path is then refit on all cases).
        seed: seed of that split.
        max_iter: coordinate-descent iterations per alpha.

    ``fit(X, times, events)`` standardises the features (fitted on the training cases only), fits
    the path, picks ``alpha_`` with the best validation concordance index (the larger alpha on ties)
    and keeps the path fitted on all training cases. ``predict_risk(X)`` returns the linear predictor
    ``x b`` at ``alpha_`` (higher = earlier death) and ``predict_survival(X, times)`` the curves
    ``S(t | x)`` from Breslow's baseline hazard. ``X`` is a DataFrame (columns are checked by name
    at predict time) or an array; ``events`` is 1 / True where death was observed
    (``1 - censorship``).
    """

    def __init__(
        self,
        *,
        l1_ratio: float = 0.5,
        n_alphas: int = 50,
        alpha_min_ratio: float | str = "auto",
        validation_fraction: float = 0.2,
        seed: int = 0,
        max_iter: int = 100_000,
    ) -> None:
        if not 0.0 < l1_ratio <= 1.0:
            raise ConfigError(f"l1_ratio must be in (0, 1]; got {l1_ratio}")
        if not 0.0 < validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in (0, 1); got {validation_fraction}")
        if n_alphas < 1:
            raise ConfigError(f"n_alphas must be >= 1; got {n_alphas}")
        self.l1_ratio, self.n_alphas, self.alpha_min_ratio = l1_ratio, n_alphas, alpha_min_ratio
        self.validation_fraction, self.seed, self.max_iter = validation_fraction, seed, max_iter
        self.alpha_: float | None = None
        self.validation_cindex_: float | None = None
        self.columns_: list[str] | None = None
        self._scaler = None
        self._model = None

    # ------------------------------------------------------------------ input checks

    def _matrix(self, X: Any, what: str, *, fitting: bool) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            if fitting:
                self.columns_ = [str(c) for c in X.columns]
            elif self.columns_ is not None:
                missing = [c for c in self.columns_ if c not in set(map(str, X.columns))]
                if missing:
                    raise DataError(f"{what}: missing omics columns {', '.join(missing[:5])}")
                X = X[self.columns_]
            non_numeric = [
                str(c) for c, dtype in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)
            ]
            if non_numeric:
                raise DataError(f"{what}: non-numeric omics columns {', '.join(non_numeric[:5])}")
            names = [str(c) for c in X.columns]
            values = X.to_numpy(dtype=np.float64)
        else:
            values = np.asarray(X, dtype=np.float64)
            names = [f"column {i}" for i in range(values.shape[-1])] if values.ndim == 2 else []
            if fitting:
                self.columns_ = None
        if values.ndim != 2 or values.shape[0] == 0:
            raise DataError(
                f"{what}: expected a non-empty 2-D table (cases x features); got shape {values.shape}"
            )
        if not fitting and values.shape[1] != self._scaler.n_features_in_:
            raise DataError(
                f"{what}: {values.shape[1]} features, the model was fit on {self._scaler.n_features_in_}"
            )
        bad = ~np.isfinite(values)
        if bad.any():
            columns = [names[j] for j in np.flatnonzero(bad.any(0))[:5]]
            raise DataError(f"{what}: missing or non-finite values in {', '.join(columns)}")
        return values

    @staticmethod
    def _labels(times: Any, events: Any, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        events = np.asarray(events).reshape(-1)
        if times.shape != (n,) or events.shape != (n,):
            raise DataError(f"{what}: times and events must have one entry per case ({n})")
        if not np.isfinite(times).all() or (times < 0).any():
            raise DataError(f"{what}: times must be finite and >= 0")
        if not np.isin(events.astype(np.float64), (0.0, 1.0)).all():
            raise DataError(f"{what}: events must be 0/1 (1 = death observed, i.e. 1 - censorship)")
        events = events.astype(bool)
        if not events.any():
            raise DataError(
                f"{what}: no uncensored events (every case is censored); a Cox model needs deaths"
            )
        return times, events

    @staticmethod
    def _structured(times: np.ndarray, events: np.ndarray) -> np.ndarray:
        from sksurv.util import Surv

        return Surv.from_arrays(event=events, time=times)

    # ------------------------------------------------------------------ fit / predict

    def _fit_path(self, X: np.ndarray, times: np.ndarray, events: np.ndarray, alphas=None, baseline=False):
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        kwargs = (
            {"alphas": alphas}
            if alphas is not None
            else {
                "n_alphas": self.n_alphas,
                "alpha_min_ratio": self.alpha_min_ratio,
            }
        )
        model = CoxnetSurvivalAnalysis(
            l1_ratio=self.l1_ratio, max_iter=self.max_iter, fit_baseline_model=baseline, **kwargs
        )
        with warnings.catch_warnings():
            # the tail of a long path may stop at max_iter; those alphas simply lose the selection
            warnings.filterwarnings("ignore", message=".*converge.*")
            model.fit(X, self._structured(times, events))
        return model

    def fit(
        self,
        X: Any,
        times: Any,
        events: Any,
        *,
        validation: tuple[Any, Any, Any] | None = None,
    ) -> CoxOmicsBaseline:
        """Fit on ``(X, times, events)``; ``validation=(X_val, times_val, events_val)`` selects alpha."""
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        values = self._matrix(X, "Cox training omics", fitting=True)
        times, events = self._labels(times, events, values.shape[0], "Cox training labels")
        self._scaler = StandardScaler().fit(values)
        scaled = self._scaler.transform(values)
        if validation is not None:
            X_val, times_val, events_val = validation
            val_values = self._scaler.transform(self._matrix(X_val, "Cox validation omics", fitting=False))
            val_times, val_events = self._labels(
                times_val, events_val, val_values.shape[0], "Cox validation labels"
            )
            full = self._fit_path(scaled, times, events, baseline=True)
            self.alpha_, self.validation_cindex_ = self._select(
                full, full.alphas_, val_values, val_times, val_events
            )
            self._model = full
            return self
        index = np.arange(values.shape[0])
        try:
            inner, held = train_test_split(
                index, test_size=self.validation_fraction, random_state=self.seed, stratify=events
            )
        except ValueError:  # too few events to stratify
            inner, held = train_test_split(index, test_size=self.validation_fraction, random_state=self.seed)
        if not events[inner].any() or not events[held].any():
            raise DataError(
                "Cox training labels: too few uncensored events to hold out a validation split for alpha; "
                "pass validation=(X_val, times_val, events_val)"
            )
        # the inner scaler is fitted on the inner cases only, so the held-out cases stay unseen
        inner_scaler = StandardScaler().fit(values[inner])
        path = self._fit_path(inner_scaler.transform(values[inner]), times[inner], events[inner])
        alpha, cindex = self._select(
            path, path.alphas_, inner_scaler.transform(values[held]), times[held], events[held]
        )
        # refit on every training case along the same path, so that alpha_ is one of its knots
        self._model = self._fit_path(scaled, times, events, alphas=path.alphas_, baseline=True)
        self.alpha_, self.validation_cindex_ = alpha, cindex
        return self

    @staticmethod
    def _select(model, alphas, X_val, times_val, events_val) -> tuple[float, float]:
        from sksurv.metrics import concordance_index_censored

        best_alpha, best = float(alphas[0]), -math.inf
        for alpha in alphas:  # from large to small: strict improvement keeps the larger alpha on ties
            risk = model.predict(X_val, alpha=alpha)
            # all-zero coefficients rank nobody: chance level, not sksurv's tie handling
            constant = np.ptp(risk) == 0
            score = 0.5 if constant else concordance_index_censored(events_val, times_val, risk)[0]
            if score > best + 1e-12:
                best_alpha, best = float(alpha), float(score)
        return best_alpha, best

    def predict_risk(self, X: Any) -> np.ndarray:
        """Linear predictor ``x b`` at the selected ``alpha_`` (higher = higher hazard)."""
        if self._model is None:
            raise ConfigError("CoxOmicsBaseline.predict_risk called before fit")
        values = self._scaler.transform(self._matrix(X, "Cox prediction omics", fitting=False))
        return np.asarray(self._model.predict(values, alpha=self.alpha_), dtype=np.float64)

    def predict_survival(self, X: Any, times: Any) -> np.ndarray:
        """``S(t | x) = S_0(t) ** exp(x b)`` at ``times``, ``[n, len(times)]`` (Breslow's baseline).

        Times outside the training follow-up take the nearest end of the curve (``S = 1`` before
        the first event time, the last value after the last).
        """
        if self._model is None:
            raise ConfigError("CoxOmicsBaseline.predict_survival called before fit")
        values = self._scaler.transform(self._matrix(X, "Cox prediction omics", fitting=False))
        grid = np.asarray(times, dtype=np.float64).reshape(-1)
        if not np.isfinite(grid).all():
            raise DataError("Cox prediction times must be finite")
        curves = self._model.predict_survival_function(values, alpha=self.alpha_)
        return np.vstack([curve(np.clip(grid, *curve.domain)) for curve in curves])

    @property
    def coefficients(self) -> np.ndarray:
        """Coefficients at ``alpha_`` on the standardised features."""
        if self._model is None:
            raise ConfigError("CoxOmicsBaseline.coefficients read before fit")
        column = int(np.argmin(np.abs(self._model.alphas_ - self.alpha_)))
        return np.asarray(self._model.coef_[:, column])
