"""Hiformer (Gui et al., 2023): "Hiformer: Heterogeneous Feature Interactions Learning with
Transformers for Recommender Systems".

Tokens (Sec. 4.1): ``t`` learned task tokens, one embedding per categorical field
(:class:`~interplay.recsys.models.embedding.FeatureEmbedding`) and the dense features concatenated
and projected by one linear layer into ``n_D`` tokens; ``L = t + n_categorical + n_D`` tokens of
width ``d`` in all, ``e = [e_1 .. e_L]``.

* **Heterogeneous attention** (Sec. 4.2, :class:`HeterogeneousAttention`): every token has its own
  query, key and value projections (and output projection), per head ``h``
  ``att^h(i, j) = softmax_j( (e_i Q_i^h)(e_j K_j^h)^T / sqrt(d_k) )``,
  ``o_i = concat_h( sum_j att^h(i, j) e_j V_j^h ) O_i``.
* **Hiformer layer** (Sec. 4.3, :class:`HiformerLayer`): queries stay per token (``e_i Q_i``), but
  keys and values are *composite* projections of the whole concatenation,
  ``[k_1 .. k_L] = e K̂`` with ``K̂ in R^{Ld x L H d_k}`` and ``[v_1 .. v_L] = e V̂`` with
  ``V̂ in R^{Ld x L H d_v}``, reshaped into ``L`` keys / values per head, so every key already mixes
  all features. Then residual + LayerNorm and a per-token (heterogeneous) feed-forward network +
  residual + LayerNorm.
* **Low-rank** (Sec. 4.4.1): ``K̂ ≈ L_k R_k^T`` (``L_k in R^{Ld x r_k}``, ``R_k in R^{L H d_k x r_k}``),
  likewise ``V̂ ≈ L_v R_v^T``, computed as ``(e L_k) R_k^T``: ``O(L d r)`` instead of ``O(L^2 d^2)``.
* **Pruning** (Sec. 4.4.2): the last layer needs outputs for the task tokens only, so it computes
  queries, attention rows and FFN for those ``t`` tokens (``O(t L)`` attention) and returns
  ``[B, t, d]``.

The task tokens' outputs are flattened through an MLP to one logit. Attention itself runs through
:func:`interplay.core.attention.attend`; the per-token projections are batched einsums.

Parameters per layer (``H`` heads, ``f`` FFN width, ``n_q = L`` or ``t`` when pruned, no bias in
Q/K/V): ``Q: n_q d H d_k``; ``K: L d L H d_k`` (low rank: ``r_k (L d + L H d_k)``); ``V: L d L H d_v``
(``r_v (L d + L H d_v)``); ``O: n_q (H d_v d + d)``; ``FFN: n_q (2 d f + f + d)``; two LayerNorms ``4 d``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interplay.core.attention import attend
from interplay.recsys.layout import FeatureLayout
from interplay.recsys.models.baselines import MLP
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.registry import REGISTRY

__all__ = [
    "CompositeProjection",
    "HeterogeneousAttention",
    "Hiformer",
    "HiformerLayer",
    "TokenwiseLinear",
    "hiformer_layer_parameters",
]


class TokenwiseLinear(nn.Module):
    """A separate linear map per token: ``[B, n, in] -> [B, n, out]`` with weights ``[n, in, out]``.

    Called with fewer than ``n_tokens`` tokens it applies the first ones' weights (a pruned layer
    passes only its task tokens).
    """

    def __init__(self, n_tokens: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.n_tokens, self.in_features, self.out_features = n_tokens, in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(n_tokens, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_tokens, out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        if n > self.n_tokens or x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected [B, <= {self.n_tokens}, {self.in_features}] tokens, got {tuple(x.shape)}"
            )
        out = torch.einsum("bni,nio->bno", x, self.weight[:n])
        return out if self.bias is None else out + self.bias[:n]

    def first(self, n: int) -> TokenwiseLinear:
        """A copy holding the first ``n`` tokens' weights."""
        sliced = TokenwiseLinear(n, self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            sliced.weight.copy_(self.weight[:n])
            if self.bias is not None:
                sliced.bias.copy_(self.bias[:n])
        return sliced.to(self.weight.device, self.weight.dtype)

    def extra_repr(self) -> str:
        return f"tokens={self.n_tokens}, in={self.in_features}, out={self.out_features}"


class CompositeProjection(nn.Module):
    """``e in R^{Ld} -> e K̂``: full ``K̂ [in, out]`` or low-rank ``L R^T`` (``L [in, r]``, ``R [out, r]``)."""

    def __init__(self, in_features: int, out_features: int, rank: int | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        if rank is None:
            bound = 1.0 / math.sqrt(in_features)
            self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        else:
            if rank < 1:
                raise ValueError(f"rank must be >= 1, got {rank}")
            bound_left, bound_right = 1.0 / math.sqrt(in_features), 1.0 / math.sqrt(rank)
            self.left = nn.Parameter(torch.empty(in_features, rank).uniform_(-bound_left, bound_left))
            self.right = nn.Parameter(torch.empty(out_features, rank).uniform_(-bound_right, bound_right))

    def matrix(self) -> Tensor:
        """The (possibly factorised) ``[in, out]`` matrix ``K̂``."""
        return self.weight if self.rank is None else self.left @ self.right.T

    def forward(self, flat: Tensor) -> Tensor:
        if self.rank is None:
            return flat @ self.weight
        return (flat @ self.left) @ self.right.T

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}"


def _heads(x: Tensor, heads: int) -> Tensor:
    """``[B, n, H * D] -> [B, H, n, D]``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """``[B, H, n, D] -> [B, n, H * D]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class HeterogeneousAttention(nn.Module):
    """Heterogeneous feature-interaction attention (Sec. 4.2): per-token ``Q_i, K_j, V_j, O_i``.

    ``[B, L, d] -> [B, n_q, d]`` where ``n_q = query_tokens`` (default ``L``): only the first
    ``n_q`` tokens ask queries.
    """

    def __init__(
        self, n_tokens: int, dim: int, heads: int = 2, d_k: int = 8, d_v: int = 8, *, backend: str = "auto"
    ) -> None:
        super().__init__()
        self.n_tokens, self.dim, self.heads, self.d_k, self.d_v = n_tokens, dim, heads, d_k, d_v
        self.backend = backend
        self.query = TokenwiseLinear(n_tokens, dim, heads * d_k, bias=False)
        self.key = TokenwiseLinear(n_tokens, dim, heads * d_k, bias=False)
        self.value = TokenwiseLinear(n_tokens, dim, heads * d_v, bias=False)
        self.out = TokenwiseLinear(n_tokens, heads * d_v, dim)

    def forward(self, x: Tensor, query_tokens: int | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.n_tokens, self.dim):
            raise ValueError(f"expected tokens [B, {self.n_tokens}, {self.dim}], got {tuple(x.shape)}")
        n_q = self.n_tokens if query_tokens is None else query_tokens
        q = _heads(self.query(x[:, :n_q]), self.heads)
        k, v = _heads(self.key(x), self.heads), _heads(self.value(x), self.heads)
        return self.out(_merge(attend(q, k, v, backend=self.backend)))


class HiformerLayer(nn.Module):
    """One Hiformer layer (Sec. 4.3-4.4): per-token queries, composite keys / values, per-token FFN.

    Args:
        n_tokens: ``L``, tokens in (task tokens first).
        dim: token width ``d``.
        heads, d_k, d_v: heads and their query/key and value widths.
        rank_k, rank_v: ranks of ``K̂ ≈ L_k R_k^T`` and ``V̂ ≈ L_v R_v^T`` (``None``: full matrices).
        prune_to: compute only the first ``prune_to`` tokens' outputs (the task tokens); the layer
            then returns ``[B, prune_to, d]`` and holds per-token weights for those tokens only.
        ffn_dim: hidden width ``f`` of the FFN (default ``4 d``).
        shared_ffn: one FFN for all tokens instead of the paper's per-token FFN.
        dropout: dropout on the attention and FFN outputs before each residual.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        heads: int = 2,
        d_k: int = 8,
        d_v: int = 8,
        rank_k: int | None = None,
        rank_v: int | None = None,
        prune_to: int | None = None,
        *,
        ffn_dim: int | None = None,
        shared_ffn: bool = False,
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if prune_to is not None and not 1 <= prune_to <= n_tokens:
            raise ValueError(f"prune_to must be in [1, {n_tokens}], got {prune_to}")
        self.n_tokens, self.dim, self.heads, self.d_k, self.d_v = n_tokens, dim, heads, d_k, d_v
        self.rank_k, self.rank_v, self.prune_to = rank_k, rank_v, prune_to
        self.ffn_dim, self.shared_ffn, self.backend = ffn_dim or 4 * dim, shared_ffn, backend
        n_q = self.n_queries
        self.query = TokenwiseLinear(n_q, dim, heads * d_k, bias=False)
        self.key = CompositeProjection(n_tokens * dim, n_tokens * heads * d_k, rank_k)
        self.value = CompositeProjection(n_tokens * dim, n_tokens * heads * d_v, rank_v)
        self.out = TokenwiseLinear(n_q, heads * d_v, dim)
        self.norm1 = nn.LayerNorm(dim)
        if shared_ffn:
            self.ffn_in: nn.Module = nn.Linear(dim, self.ffn_dim)
            self.ffn_out: nn.Module = nn.Linear(self.ffn_dim, dim)
        else:
            self.ffn_in = TokenwiseLinear(n_q, dim, self.ffn_dim)
            self.ffn_out = TokenwiseLinear(n_q, self.ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def n_queries(self) -> int:
        return self.n_tokens if self.prune_to is None else self.prune_to

    def attention(self, x: Tensor) -> Tensor:
        """The composite multi-head attention ``[B, L, d] -> [B, n_q, d]`` (before residual)."""
        b = x.shape[0]
        flat = x.reshape(b, self.n_tokens * self.dim)
        q = _heads(self.query(x[:, : self.n_queries]), self.heads)
        k = _heads(self.key(flat).view(b, self.n_tokens, self.heads * self.d_k), self.heads)
        v = _heads(self.value(flat).view(b, self.n_tokens, self.heads * self.d_v), self.heads)
        return self.out(_merge(attend(q, k, v, backend=self.backend)))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.n_tokens, self.dim):
            raise ValueError(f"expected tokens [B, {self.n_tokens}, {self.dim}], got {tuple(x.shape)}")
        h = self.norm1(x[:, : self.n_queries] + self.dropout(self.attention(x)))
        return self.norm2(h + self.dropout(self.ffn_out(torch.relu(self.ffn_in(h)))))

    def prune(self, tokens: int) -> HiformerLayer:
        """A pruned copy (``prune_to=tokens``) with this layer's weights: it returns this layer's
        first ``tokens`` output rows."""
        if self.prune_to is not None and tokens > self.prune_to:
            raise ValueError(f"cannot prune a layer of {self.prune_to} query tokens to {tokens}")
        pruned = HiformerLayer(
            self.n_tokens,
            self.dim,
            self.heads,
            self.d_k,
            self.d_v,
            self.rank_k,
            self.rank_v,
            prune_to=tokens,
            ffn_dim=self.ffn_dim,
            shared_ffn=self.shared_ffn,
            dropout=self.dropout.p,
            backend=self.backend,
        ).to(next(self.parameters()).device, next(self.parameters()).dtype)
        state = {}
        for name, value in self.state_dict().items():
            per_token = name.startswith(("query.", "out.")) or (
                not self.shared_ffn and name.startswith(("ffn_in.", "ffn_out."))
            )
            state[name] = value[:tokens] if per_token else value
        pruned.load_state_dict(state)
        return pruned


def hiformer_layer_parameters(
    n_tokens: int,
    dim: int,
    heads: int = 2,
    d_k: int = 8,
    d_v: int = 8,
    rank_k: int | None = None,
    rank_v: int | None = None,
    prune_to: int | None = None,
    ffn_dim: int | None = None,
) -> int:
    """Parameters of one :class:`HiformerLayer` with a per-token FFN (the formula of the module doc)."""
    L, d, f = n_tokens, dim, ffn_dim or 4 * dim
    n_q = L if prune_to is None else prune_to
    key = L * d * L * heads * d_k if rank_k is None else rank_k * (L * d + L * heads * d_k)
    value = L * d * L * heads * d_v if rank_v is None else rank_v * (L * d + L * heads * d_v)
    return (
        n_q * d * heads * d_k + key + value + n_q * (heads * d_v * d + d) + n_q * (2 * d * f + f + d) + 4 * d
    )


@REGISTRY.models.register(
    "hiformer",
    "Hiformer: heterogeneous attention with composite keys/values, low-rank, pruning (Gui et al., 2023)",
)
class Hiformer(nn.Module):
    """Hiformer CTR model.

    Args:
        layout: the feature layout (categorical fields become tokens; numeric fields are projected).
        dim: token width ``d``.
        layers: Hiformer layers.
        heads, d_k, d_v: attention heads and their widths.
        task_tokens: learned task tokens ``t`` (their outputs feed the head).
        dense_tokens: ``n_D``, tokens the numeric features are projected into (default
            ``ceil(n_numeric / 4)``, at least 1; 0 without numeric fields).
        rank_k, rank_v: low-rank composite key / value projections (``None``: full).
        prune_last: the last layer computes the task tokens only (Sec. 4.4.2).
        mlp: hidden widths of the head MLP.
        dropout: dropout in the layers and the head.
        ffn_dim, shared_ffn: FFN width (default ``4 d``) and whether all tokens share one FFN.
        input_norm: LayerNorm each input token (default; not in the paper, which leaves token
            scales unspecified): without it the near-zero initial embeddings are drowned out by the
            projected dense features in the composite keys and values.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        layers: int = 2,
        heads: int = 2,
        d_k: int = 8,
        d_v: int = 8,
        task_tokens: int = 1,
        dense_tokens: int | None = None,
        rank_k: int | None = None,
        rank_v: int | None = None,
        prune_last: bool = False,
        mlp: Sequence[int] = (64,),
        dropout: float = 0.0,
        ffn_dim: int | None = None,
        shared_ffn: bool = False,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        if task_tokens < 1:
            raise ValueError(f"task_tokens must be >= 1, got {task_tokens}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        n_numeric = layout.n_numeric
        if dense_tokens is None:
            dense_tokens = max(1, math.ceil(n_numeric / 4)) if n_numeric else 0
        elif dense_tokens and not n_numeric:
            raise ValueError(f"dense_tokens={dense_tokens} but the layout has no numeric fields")
        elif n_numeric and dense_tokens < 1:
            raise ValueError(f"the layout has {n_numeric} numeric fields: dense_tokens must be >= 1")
        if layout.n_categorical + dense_tokens == 0:
            raise ValueError("Hiformer needs at least one categorical or numeric field; the layout has none")
        self.layout, self.dim, self.task_tokens, self.dense_tokens = layout, dim, task_tokens, dense_tokens
        # numeric fields are projected jointly below, so the embedding holds categorical tables only
        self.embedding = FeatureEmbedding(dataclasses.replace(layout, numeric=()), dim)
        self.dense = nn.Linear(n_numeric, dense_tokens * dim) if dense_tokens else None
        self.task = nn.Parameter(torch.randn(task_tokens, dim) * 0.02)
        self.n_tokens = task_tokens + layout.n_categorical + dense_tokens
        self.layers = nn.ModuleList(
            HiformerLayer(
                self.n_tokens,
                dim,
                heads,
                d_k,
                d_v,
                rank_k,
                rank_v,
                prune_to=task_tokens if prune_last and i == layers - 1 else None,
                ffn_dim=ffn_dim,
                shared_ffn=shared_ffn,
                dropout=dropout,
            )
            for i in range(layers)
        )
        # one scale for every token: embeddings start near 0 while projected counts are O(1), and
        # the composite keys would otherwise see only the dense tokens
        self.input_norm = nn.LayerNorm(dim) if input_norm else nn.Identity()
        self.head = MLP(task_tokens * dim, mlp, out_features=1, dropout=dropout)

    def tokens(self, batch: dict[str, Tensor]) -> Tensor:
        """``[B, L, d]``: task tokens, categorical embeddings, projected dense tokens."""
        b = batch["categorical"].shape[0]
        parts = [self.task.expand(b, -1, -1)]
        if self.layout.n_categorical:
            parts.append(self.embedding(batch))
        if self.dense is not None:
            numeric = batch["numeric"]
            if numeric.shape[1] != self.layout.n_numeric:
                raise ValueError(
                    f"batch has {numeric.shape[1]} numeric columns, the layout {self.layout.n_numeric}"
                )
            parts.append(self.dense(numeric).view(b, self.dense_tokens, self.dim))
        return torch.cat(parts, dim=1)

    def forward_features(self, batch: dict[str, Tensor]) -> Tensor:
        """The task tokens' outputs ``[B, t, d]``."""
        x = self.input_norm(self.tokens(batch))
        for layer in self.layers:
            x = layer(x)
        return x[:, : self.task_tokens]

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features.flatten(1)).squeeze(-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.forward_head(self.forward_features(batch))
