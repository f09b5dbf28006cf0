"""CTR baselines on the shared field tokens: DNN, DCN-v2 and AutoInt(+).

Every model embeds a batch with :class:`~interplay.recsys.models.embedding.FeatureEmbedding`
(``F`` field tokens of width ``d``) and returns one pre-sigmoid logit per example.

* **DNN**: the flattened tokens ``x_0 = [e_1 .. e_F] in R^{F d}`` through an MLP.
* **DCN-v2** (Wang et al., 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
  Web-scale Learning to Rank Systems"): cross layers on ``x_0``

  - Eq. (1), full rank: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``;
  - Eq. (2), low rank: ``x_{l+1} = x_0 ⊙ (U_l (V_l^T x_l) + b_l) + x_l``;
  - Eq. (3)-(4), mixture of low-rank experts (DCN-Mix):
    ``x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l`` with
    ``E_i(x_l) = x_0 ⊙ (U_l^i g(C_l^i g(V_l^{iT} x_l)) + b_l)``, ``g = tanh`` and softmax gates;

  combined with a DNN either *stacked* (cross network, then DNN) or *parallel* (both read ``x_0``,
  outputs concatenated), then a linear layer to the logit.
* **AutoInt** (Song et al., 2019, "AutoInt: Automatic Feature Interaction Learning via
  Self-Attentive Neural Networks"): interacting layers, Eq. (5)-(8): per head ``h``
  ``alpha^h_{m,k} = softmax_k(<W_Q^h e_m, W_K^h e_k>)``, ``ẽ^h_m = sum_k alpha^h_{m,k} W_V^h e_k``,
  heads concatenated, then ``e^Res_m = ReLU(ẽ_m + W_Res e_m)``; the final tokens are flattened to
  the logit (Eq. 9). *AutoInt+* adds a parallel DNN whose logit is summed in. The paper's inner
  product is unscaled (``scaled=False``); ``scaled=True`` divides by ``sqrt(d')`` as in Transformers.
  The softmax attention runs through :func:`interplay.core.attention.attend`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interplay.core.attention import attend
from interplay.recsys.layout import FeatureLayout
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.registry import REGISTRY

__all__ = ["DCNv2", "DNN", "MLP", "AutoInt", "CrossNetwork", "InteractingLayer"]


def _check_fields(layout: FeatureLayout, model: str) -> None:
    if layout.n_fields == 0:
        raise ValueError(f"{model} needs at least one categorical or numeric field; the layout has none")


class MLP(nn.Sequential):
    """``Linear -> [BatchNorm] -> ReLU -> Dropout`` per hidden width; ``out_features`` adds a last Linear."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 128),
        *,
        out_features: int | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_features is not None:
            layers.append(nn.Linear(width, out_features))
            width = out_features
        super().__init__(*layers)
        self.out_features = width


@REGISTRY.models.register("dnn", "DNN: MLP over the concatenated field embeddings (CTR baseline)")
class DNN(nn.Module):
    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_fields(layout, "DNN")
        self.embedding = FeatureEmbedding(layout, dim)
        in_features = layout.n_fields * dim
        self.mlp = MLP(in_features, hidden, out_features=1, dropout=dropout, batch_norm=batch_norm)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.mlp(self.embedding(batch).flatten(1)).squeeze(-1)


class CrossNetwork(nn.Module):
    """DCN-v2 cross layers on ``x_0 in R^D``: full rank (Eq. 1), low rank (Eq. 2) or mixture (Eq. 3-4).

    ``rank=None`` gives full-rank ``W_l`` (``D x D``). ``rank=r`` with ``experts=1`` factorises
    ``W_l = U_l V_l^T`` (``U, V in R^{D x r}``); ``experts=K > 1`` uses the mixture of ``K`` low-rank
    experts with a ``r x r`` map ``C`` and ``tanh`` between the factors, gated by a softmax over
    ``Linear(D, 1)`` scores of ``x_l`` per expert.
    """

    def __init__(
        self, in_features: int, layers: int = 3, *, rank: int | None = None, experts: int = 1
    ) -> None:
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts must be >= 1, got {experts}")
        if experts > 1 and rank is None:
            raise ValueError("a mixture of cross experts (experts > 1) needs a rank")
        self.in_features, self.n_layers, self.rank, self.experts = in_features, layers, rank, experts
        d = in_features
        self.bias = nn.Parameter(torch.zeros(layers, d))
        if rank is None:
            self.weight = nn.Parameter(torch.randn(layers, d, d) / d**0.5)
        else:
            # [layers, experts, D, r]: x -> V^T x -> (C, g) -> U (.)
            self.v = nn.Parameter(torch.randn(layers, experts, d, rank) / d**0.5)
            self.u = nn.Parameter(torch.randn(layers, experts, rank, d) / rank**0.5)
            if experts > 1:
                self.c = nn.Parameter(torch.randn(layers, experts, rank, rank) / rank**0.5)
                self.gate = nn.Parameter(torch.randn(layers, d, experts) / d**0.5)

    def layer(self, index: int, x0: Tensor, x: Tensor) -> Tensor:
        """One cross layer ``x_l -> x_{l+1}``."""
        b = self.bias[index]
        if self.rank is None:
            return x0 * (x @ self.weight[index].T + b) + x  # Eq. (1)
        if self.experts == 1:
            return x0 * ((x @ self.v[index, 0]) @ self.u[index, 0] + b) + x  # Eq. (2)
        h = torch.tanh(torch.einsum("bd,edr->ber", x, self.v[index]))
        h = torch.tanh(torch.einsum("ber,ers->bes", h, self.c[index]))
        experts = x0.unsqueeze(1) * (torch.einsum("bes,esd->bed", h, self.u[index]) + b)  # Eq. (4)
        gates = torch.softmax(x @ self.gate[index], dim=-1)
        return torch.einsum("be,bed->bd", gates, experts) + x  # Eq. (3)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for i in range(self.n_layers):
            x = self.layer(i, x0, x)
        return x


@REGISTRY.models.register(
    "dcnv2", "DCN-v2: cross network (full/low-rank/mixture) with a DNN (Wang et al., 2021)"
)
class DCNv2(nn.Module):
    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        cross_layers: int = 3,
        structure: str = "parallel",
        hidden: Sequence[int] = (256, 128),
        rank: int | None = None,
        experts: int = 1,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_fields(layout, "DCN-v2")
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"structure must be 'stacked' or 'parallel', got '{structure}'")
        self.structure = structure
        self.embedding = FeatureEmbedding(layout, dim)
        in_features = layout.n_fields * dim
        self.cross = CrossNetwork(in_features, cross_layers, rank=rank, experts=experts)
        self.dnn = MLP(in_features, hidden, dropout=dropout, batch_norm=batch_norm)
        head_in = self.dnn.out_features if structure == "stacked" else in_features + self.dnn.out_features
        self.head = nn.Linear(head_in, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding(batch).flatten(1)
        if self.structure == "stacked":
            h = self.dnn(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.dnn(x0)], dim=-1)
        return self.head(h).squeeze(-1)


class InteractingLayer(nn.Module):
    """AutoInt's multi-head self-attention over field tokens with a residual projection (Eq. 5-8).

    ``[B, F, in_dim] -> [B, F, heads * head_dim]``. Projections have no bias, as in the paper.
    """

    def __init__(
        self,
        in_dim: int,
        heads: int = 2,
        head_dim: int = 32,
        *,
        residual: bool = True,
        scaled: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.heads, self.head_dim, self.scaled, self.backend = heads, head_dim, scaled, backend
        out = heads * head_dim
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.residual = nn.Linear(in_dim, out, bias=False) if residual else None
        self.out_dim = out

    def forward(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, f, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scale = None if self.scaled else 1.0  # Eq. (5) is a plain inner product
        out = attend(q, k, v, scale=scale, backend=self.backend)
        out = out.transpose(1, 2).reshape(b, f, self.out_dim)
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(out)


@REGISTRY.models.register(
    "autoint", "AutoInt(+): multi-head self-attention over field tokens (Song et al., 2019)"
)
class AutoInt(nn.Module):
    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        layers: int = 3,
        heads: int = 2,
        head_dim: int = 32,
        residual: bool = True,
        scaled: bool = False,
        dnn: bool = False,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_fields(layout, "AutoInt")
        self.embedding = FeatureEmbedding(layout, dim)
        blocks = []
        width = dim
        for _ in range(layers):
            blocks.append(InteractingLayer(width, heads, head_dim, residual=residual, scaled=scaled))
            width = blocks[-1].out_dim
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(layout.n_fields * width, 1)
        self.dnn = (
            MLP(layout.n_fields * dim, hidden, out_features=1, dropout=dropout, batch_norm=batch_norm)
            if dnn
            else None
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        tokens = self.embedding(batch)
        x = tokens
        for block in self.blocks:
            x = block(x)
        logit = self.head(x.flatten(1))
        if self.dnn is not None:  # AutoInt+
            logit = logit + self.dnn(tokens.flatten(1))
        return logit.squeeze(-1)
