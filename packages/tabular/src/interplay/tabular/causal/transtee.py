"""TransTEE: Transformers as treatment-effect estimators.

Zhang, Zhang, Lipton, Li and Xing, "Exploring Transformer Backbones for Heterogeneous Treatment
Effect Estimation", TMLR 2023 (arXiv:2202.01336); layers follow the released code
(``hlzhang109/TransTEE``: ``Continuous/models/itermidate_models.py::VcnetAttv2``,
``Dosage/TransTEE.py``, ``models/transformers.py``).

* Covariate tokens (the paper's covariate embedding): every scalar covariate ``x_j`` becomes
  ``W x_j + b`` with one ``Linear(1, d)`` shared by all covariates. We add a learnable column
  identity embedding ``e_j`` (our addition; the released code has none and tells covariates apart
  only through the per-covariate affine parameters of its BatchNorm over covariates, which we keep).
* Treatment token: ``Linear(1, d)`` of the treatment value (binary 0/1, or a continuous treatment
  mapped to [0, 1]); a table embedding for multi-valued (categorical) treatments (a linear map of the
  class index would order unordered classes). For (treatment, dosage) pairs the code embeds both
  with ``Linear(1, d)`` each and combines them as ``MLP([e_t, e_d]) -> d`` into one token.
* Encoder (the code's ``TransformerEncoderLayer``): self-attention over the covariate tokens,
  post-norm, ``BatchNorm1d`` over the covariate axis, FFN ``d -> ff_dim -> d`` with ReLU (1 layer,
  2 heads, ``ff_dim`` 50 in the code).
* Decoder (the code's ``TransformerDecoderLayer``): self-attention among the treatment tokens, then
  cross-attention from the treatment tokens (queries) to the encoded covariates (keys/values), then
  the FFN; residual connections, no normalisation (the code's decoder norms are commented out).
* Outcome head: ``Linear(d, 1)`` (``MLP`` for the dosage setting).
* Propensity regularisation (the paper's TR / PTR, ``main_batch*.py``): a propensity head on
  mean-pooled covariate embeddings, trained adversarially: the head minimises its loss ``L_D`` on
  detached features (TR: MSE on ``t``; PTR: Gaussian NLL) in its own optimiser step, then the model
  minimises ``MSE(Q, y) - alpha * L_D`` with ``alpha = 0.5``, which pushes the representation to
  carry as little treatment information as it can. The code pools the covariate tokens *before*
  the encoder; with a shared value embedding that pool is an affine map of the covariates' mean, so
  by default we pool the encoder's output (``propensity_features="encoder"``; ``"input"`` follows
  the code).

Attention runs through :class:`interplay.core.nn.MultiHeadAttention` (``interplay.core.attention.attend``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interplay.core.nn import FeedForward, MultiHeadAttention
from interplay.tabular.causal.base import CausalModel
from interplay.tabular.causal.data import CausalInputError
from interplay.tabular.registry import REGISTRY

__all__ = ["CovariateEncoderLayer", "CovariateTokens", "TransTEE", "TreatmentDecoderLayer", "TreatmentTokens"]

NORMS = ("batch", "layer", "none")


class CovariateTokens(nn.Module):
    """``x [B, p] -> [B, p, d]``: a shared ``Linear(1, d)`` per scalar plus a column identity embedding."""

    def __init__(self, n_covariates: int, dim: int, *, column_embedding: bool = True, init_std: float = 0.1):
        super().__init__()
        self.value = nn.Linear(1, dim)
        nn.init.normal_(self.value.weight, 0.0, init_std)  # the code's Embeddings(initrange=0.1)
        nn.init.zeros_(self.value.bias)
        self.column = nn.Parameter(0.02 * torch.randn(n_covariates, dim)) if column_embedding else None

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.value(x.unsqueeze(-1))
        return tokens + self.column if self.column is not None else tokens


class TreatmentTokens(nn.Module):
    """The treatment token ``[B, 1, d]`` of binary, categorical, continuous or (treatment, dosage) inputs."""

    def __init__(self, treatment: str, n_treatments: int, dim: int, *, init_std: float = 0.2) -> None:
        super().__init__()
        self.treatment = treatment
        if treatment == "categorical":
            self.table = nn.Embedding(n_treatments, dim)
            nn.init.normal_(self.table.weight, 0.0, init_std)
        else:
            self.value = nn.Linear(1, dim)  # the treatment (or, for dosage pairs, the treatment index)
            nn.init.normal_(self.value.weight, 0.0, init_std)
            nn.init.zeros_(self.value.bias)
        if treatment == "dosage":
            self.dosage = nn.Linear(1, dim)
            nn.init.normal_(self.dosage.weight, 0.0, init_std)
            nn.init.zeros_(self.dosage.bias)
            # Dosage/TransTEE.py: linear2 = MLP(2d -> d -> d) over the concatenated embeddings
            self.combine = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor, dosage: Tensor | None = None) -> Tensor:
        if self.treatment == "categorical":
            token = self.table(t.long())
        else:
            token = self.value(t.float().unsqueeze(-1))
        if self.treatment == "dosage":
            if dosage is None:
                raise CausalInputError("TransTEE for (treatment, dosage) pairs needs the dosage")
            token = self.combine(torch.cat([token, self.dosage(dosage.float().unsqueeze(-1))], -1))
        return token.unsqueeze(1)


def _norm(kind: str, dim: int, n_tokens: int) -> nn.Module:
    if kind == "batch":  # BatchNorm1d(num_cov) on [B, L, d]: statistics per covariate, as the code
        return nn.BatchNorm1d(n_tokens)
    if kind == "layer":
        return nn.LayerNorm(dim)
    return nn.Identity()


class CovariateEncoderLayer(nn.Module):
    """Post-norm encoder layer of the code: ``x = N1(x + Attn(x)); x = N2(x + FFN(x))``."""

    def __init__(
        self, dim: int, heads: int, ff_dim: int, n_tokens: int, *, dropout: float = 0.0, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.ffn = FeedForward(dim, ff_dim, dropout=dropout, activation=nn.ReLU)
        self.norm1, self.norm2 = _norm(norm, dim, n_tokens), _norm(norm, dim, n_tokens)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ffn(x))


class TreatmentDecoderLayer(nn.Module):
    """Decoder layer: treatment self-attention, cross-attention to the covariates, FFN (residuals only)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.ffn = FeedForward(dim, ff_dim, dropout=dropout, activation=nn.ReLU)

    def forward(self, treatments: Tensor, covariates: Tensor) -> Tensor:
        treatments = treatments + self.self_attn(treatments)
        treatments = treatments + self.cross_attn(treatments, covariates)
        return treatments + self.ffn(treatments)


@REGISTRY.models.register(
    "transtee",
    "TransTEE: covariate/treatment tokens, cross-attention, adversarial propensity (Zhang et al., 2023)",
)
class TransTEE(CausalModel):
    """TransTEE outcome model ``mu(x, t[, dosage])`` (see the module docstring).

    Args:
        n_covariates: number of covariates ``p``.
        treatment: ``binary``, ``categorical``, ``continuous`` or ``dosage``; ``n_treatments`` values.
        dim: token width ``d``; heads: attention heads; ff_dim: FFN width; layers: encoder and decoder layers.
        dropout: dropout in attention and FFN.
        column_embedding: add a learnable identity embedding per covariate (our addition).
        norm: ``batch`` (BatchNorm over covariates, as the code), ``layer`` or ``none`` in the encoder.
        head: ``linear`` (``Linear(d, 1)``) or ``mlp`` (``d -> d -> 1``, the dosage code's head).
        adversarial: ``none``, ``tr`` or ``ptr``; adversarial_weight: ``alpha`` of ``MSE - alpha * L_D``.
        adversary_hidden: width of the propensity head.
        propensity_features: ``encoder`` (mean of encoded covariates) or ``input`` (of the input
            tokens, as the code).
        init_std: std of the normal init of linear layers (the code's 0.1); treatment_init_std of the
            treatment embedding (0.2).
    """

    def __init__(
        self,
        n_covariates: int,
        treatment: str = "binary",
        n_treatments: int = 2,
        dim: int = 10,
        heads: int = 2,
        ff_dim: int = 50,
        layers: int = 1,
        dropout: float = 0.0,
        column_embedding: bool = True,
        norm: str = "batch",
        head: str = "linear",
        adversarial: str = "tr",
        adversarial_weight: float = 0.5,
        adversary_hidden: int = 50,
        propensity_features: str = "encoder",
        init_std: float = 0.1,
        treatment_init_std: float = 0.2,
    ) -> None:
        super().__init__(n_covariates, treatment, n_treatments)
        if norm not in NORMS:
            raise CausalInputError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if head not in ("linear", "mlp"):
            raise CausalInputError(f"head must be 'linear' or 'mlp', got {head!r}")
        if propensity_features not in ("encoder", "input"):
            raise CausalInputError(
                f"propensity_features must be 'encoder' or 'input', got {propensity_features!r}"
            )
        if layers < 1:
            raise CausalInputError(f"layers must be >= 1, got {layers}")
        self.propensity_features = propensity_features
        self.covariates = CovariateTokens(n_covariates, dim, column_embedding=column_embedding)
        self.treatments = TreatmentTokens(treatment, n_treatments, dim, init_std=treatment_init_std)
        self.encoder = nn.ModuleList(
            CovariateEncoderLayer(dim, heads, ff_dim, n_covariates, dropout=dropout, norm=norm)
            for _ in range(layers)
        )
        self.decoder = nn.ModuleList(
            TreatmentDecoderLayer(dim, heads, ff_dim, dropout=dropout) for _ in range(layers)
        )
        self.head = (
            nn.Linear(dim, 1)
            if head == "linear"
            else nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        )
        self._initialise(init_std)
        self.build_adversary(adversarial, dim, adversary_hidden, adversarial_weight)

    def _initialise(self, std: float) -> None:
        """The code's ``_initialize_weights``: N(0, std) for every Linear wider than 1 input, zero biases;
        query/key/value projections keep torch's MultiheadAttention init (Xavier-uniform)."""
        projections = set()
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                for proj in (module.q_proj, module.kv_proj):
                    nn.init.xavier_uniform_(proj.weight)
                    nn.init.zeros_(proj.bias)
                    projections.add(id(proj))
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.in_features > 1 and id(module) not in projections:
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(input tokens, encoded tokens)`` of raw covariates ``x [B, p]``, both ``[B, p, d]``."""
        if x.dim() != 2 or x.shape[1] != self.n_covariates:
            raise CausalInputError(
                f"TransTEE expects covariates [B, {self.n_covariates}], got {tuple(x.shape)}"
            )
        tokens = self.covariates(self.scale_covariates(x.float()))
        memory = tokens
        for layer in self.encoder:
            memory = layer(memory)
        return tokens, memory

    def decode(self, memory: Tensor, t: Tensor, dosage: Tensor | None = None) -> Tensor:
        """Standardised outcome ``[B]`` of treatments ``t`` given encoded covariates ``memory``."""
        if self.treatment == "continuous":
            t = self.scale_continuous(t.float())
        if dosage is not None:
            dosage = self.scale_continuous(dosage.float())
        query = self.treatments(t, dosage)
        for layer in self.decoder:
            query = layer(query, memory)
        return self.head(query[:, 0]).squeeze(-1)

    def forward(self, x: Tensor, t: Tensor, dosage: Tensor | None = None) -> dict[str, Tensor]:
        tokens, memory = self.encode(x)
        pooled = (memory if self.propensity_features == "encoder" else tokens).mean(1)
        return {"outcome": self.decode(memory, t, dosage), "representation": pooled}

    def potential_outcomes(self, x: Tensor, dosage: Tensor | None = None) -> Tensor:
        """``[B, K]`` outcomes under every treatment value, encoding the covariates once."""
        if self.treatment == "continuous":
            raise CausalInputError("potential_outcomes needs a discrete treatment; use dose_response")
        _, memory = self.encode(x)
        columns = [
            self.unstandardise_outcome(
                self.decode(memory, torch.full((x.shape[0],), k, dtype=torch.long, device=x.device), dosage)
            )
            for k in range(self.n_treatments)
        ]
        return torch.stack(columns, 1)

    def average_outcomes(self, x: Tensor, grid: Tensor, treatment: int | None = None) -> Tensor:
        """The average dose-response on ``grid``, encoding the covariates once (the decoder is cheap)."""
        _, memory = self.encode(x)
        values = []
        for g in grid.tolist():
            t, dosage = self._grid_inputs(len(x), g, treatment, x.device)
            values.append(self.unstandardise_outcome(self.decode(memory, t, dosage)).mean())
        return torch.stack(values)
