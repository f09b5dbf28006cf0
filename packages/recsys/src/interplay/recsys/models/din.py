"""DIN: Deep Interest Network (Zhou et al., KDD 2018, "Deep Interest Network for Click-Through Rate
Prediction", arXiv:1706.06978).

The user's interest is pooled from the behaviour sequence with weights that depend on the target
(candidate) item, Eq. (3) of the paper::

    v_U(A) = f(v_A, e_1, ..., e_H) = sum_j a(e_j, v_A) e_j = sum_j w_j e_j

where the *activation unit* ``a`` (Fig. 2, right) is an MLP over the out-product-style features
``[e_j, v_A, e_j - v_A, e_j * v_A]`` (:class:`ActivationUnit`; the element-wise difference and product
are the usual open-source stand-in for the paper's out product). As the paper stresses (Section 4.3),
the weights are **not** normalised by a softmax, so the magnitude of ``v_U`` keeps the intensity of the
user's interest: a user with five relevant behaviours gets a larger interest vector than one with one.
Padding items (id 0, or any position at or beyond ``sequence_length``) get weight 0, and a user with
no behaviour gets ``v_U = 0``.

The prediction head is an MLP over ``[v_U, v_A, other field tokens flattened]`` (Fig. 2: hidden sizes
200-80, then one logit here where the paper has a two-way softmax).

Activation function: the paper proposes Dice (Eq. (9)), ``f(s) = p(s) s + (1 - p(s)) alpha s`` with
``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))`` over the mini-batch, as an improvement over
PReLU. The default here is **PReLU** (``activation="prelu"``): it has no batch statistics, so a
prediction depends only on its own example (identical at batch size 1, in serving and in tests);
PReLU is the activation of the paper's base design, Dice its refinement. ``activation="dice"`` selects
Dice; in the activation unit its statistics are taken over the real (non-padding) behaviours only.
(Mini-batch aware regularisation, the paper's Section 5.1, belongs to the optimiser, not the model.)

:class:`ActivationUnit`, :class:`MLP` and :class:`Dice` are reused by AW-MoE (``awmoe.py``) and the
plain MoE baseline (``moe.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.recsys.layout import FeatureLayout
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.registry import REGISTRY

ACTIVATIONS = ("prelu", "dice", "relu")


class Dice(nn.Module):
    """Data-adaptive activation of DIN, Eq. (9): ``p(s) s + (1 - p(s)) alpha s`` on ``[N, dim]``.

    ``p(s) = sigmoid(BN(s))`` with a non-affine batch norm (mini-batch statistics in training,
    running averages in eval). A training batch with a single row falls back to the running
    statistics, where a batch variance does not exist.
    """

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            normed = F.batch_norm(x, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
        else:
            normed = self.norm(x)
        p = torch.sigmoid(normed)
        return p * x + (1 - p) * self.alpha * x


def make_activation(name: str, dim: int) -> nn.Module:
    if name == "prelu":
        return nn.PReLU(dim)
    if name == "dice":
        return Dice(dim)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation '{name}' (expected one of {', '.join(ACTIVATIONS)})")


class MLP(nn.Module):
    """``Linear -> activation -> dropout`` per hidden size, then ``Linear -> out_dim`` on ``[N, in_dim]``.

    With ``out_dim=None`` the last hidden layer's output is returned (no head).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = 1,
        *,
        activation: str = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation, size)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ActivationUnit(nn.Module):
    """DIN's activation unit (Fig. 2): ``a_j = MLP([b_j, t, b_j - t, b_j * t])``, one score per behaviour.

    ``forward(items [B, L, d], target [B, d], mask [B, L]) -> scores [B, L]``: raw (unnormalised)
    scores, exactly 0 at padded positions. With Dice (``pack_real_items``, on by default for Dice)
    only the real behaviours go through the MLP, so padding never enters Dice's batch statistics;
    otherwise every position is scored densely and padding zeroed afterwards (no data-dependent
    shapes, so no host synchronisation on GPU and nothing for ``torch.compile`` to break on).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (36,), *, activation: str = "prelu") -> None:
        super().__init__()
        self.dim = dim
        self.mlp = MLP(4 * dim, hidden, 1, activation=activation)
        self.pack_real_items = activation == "dice"

    @staticmethod
    def features(items: Tensor, target: Tensor) -> Tensor:
        """``[b, t, b - t, b * t]`` along the last axis (``items [..., d]``, ``target`` broadcastable)."""
        target = target.expand_as(items)
        return torch.cat([items, target, items - target, items * target], dim=-1)

    def forward(self, items: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if items.shape[-1] != self.dim or target.shape[-1] != self.dim:
            raise ValueError(
                f"activation unit of dim {self.dim} got items {tuple(items.shape)}, "
                f"target {tuple(target.shape)}"
            )
        mask = mask.bool()
        target = target.unsqueeze(1).expand_as(items)
        if not self.pack_real_items:
            # PReLU and Dice take channels on dim 1: score [B * L, 4d] rows
            scores = self.mlp(self.features(items, target).flatten(0, 1)).view(mask.shape)
            return torch.where(mask, scores, torch.zeros_like(scores))
        out = self.mlp(self.features(items[mask], target[mask])).squeeze(-1)  # [N_real]
        scores = out.new_zeros(mask.shape)
        scores[mask] = out
        return scores


def weighted_sum_pool(items: Tensor, scores: Tensor, mask: Tensor) -> Tensor:
    """DIN Eq. (3): ``sum_j w_j b_j`` over real behaviours (no softmax); zero for an empty sequence."""
    weights = scores * mask.to(scores.dtype)
    return torch.einsum("bl,bld->bd", weights, items)


def masked_mean(items: Tensor, mask: Tensor) -> Tensor:
    """Mean of the real behaviours ``[B, d]``; zero for an empty sequence."""
    weights = mask.to(items.dtype)
    return torch.einsum("bl,bld->bd", weights, items) / weights.sum(1, keepdim=True).clamp_min(1.0)


def embed_behaviours(embedding: FeatureEmbedding, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Behaviour items ``[B, L, d]`` and mask ``[B, L]``: real iff id != 0 and position < sequence_length.

    The length check makes models indifferent to whatever a reader leaves in padded positions; those
    rows are zeroed so that no pooling can see them.
    """
    items, mask = embedding.embed_sequence(batch)
    lengths = batch.get("sequence_length")
    if lengths is not None:
        positions = torch.arange(mask.shape[1], device=mask.device)
        mask = mask & (positions < lengths.to(mask.device).unsqueeze(1))
        items = items * mask.unsqueeze(-1).to(items.dtype)
    return items, mask


def require_sequence(layout: FeatureLayout, model: str) -> int:
    if layout.sequence is None or layout.target_index is None:
        raise ValueError(
            f"{model} needs a behaviour sequence in the feature layout (layout.sequence is None)"
        )
    return layout.target_index


@REGISTRY.models.register("din", "DIN: target-attentive interest pooling of behaviours (Zhou et al., 2018)")
class DIN(nn.Module):
    """Deep Interest Network. ``forward(batch) -> logits [B]`` (pre-sigmoid).

    Args:
        layout: the feature layout (filled by the engine); needs a behaviour sequence.
        dim: embedding size of every field token and behaviour item.
        attention_hidden: hidden sizes of the activation unit's MLP.
        hidden: hidden sizes of the prediction MLP (the paper's 200-80).
        activation: ``"prelu"`` (default), ``"dice"`` or ``"relu"``, for both MLPs.
        dropout: dropout after each hidden layer of the prediction MLP.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        attention_hidden: Sequence[int] = (36,),
        hidden: Sequence[int] = (200, 80),
        activation: str = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.target_index = require_sequence(layout, "DIN")
        self.layout = layout
        self.embedding = FeatureEmbedding(layout, dim)
        self.activation_unit = ActivationUnit(dim, tuple(attention_hidden), activation=activation)
        in_dim = 2 * dim + (layout.n_fields - 1) * dim
        self.head = MLP(in_dim, tuple(hidden), 1, activation=activation, dropout=dropout)

    def user_interest(self, batch: dict[str, Tensor]) -> Tensor:
        """``v_U`` of Eq. (3), ``[B, dim]``."""
        items, mask = embed_behaviours(self.embedding, batch)
        target = self.embedding.target(batch)
        return weighted_sum_pool(items, self.activation_unit(items, target, mask), mask)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        tokens = self.embedding(batch)
        items, mask = embed_behaviours(self.embedding, batch)
        target = tokens[:, self.target_index]
        interest = weighted_sum_pool(items, self.activation_unit(items, target, mask), mask)
        t = self.target_index
        others = torch.cat([tokens[:, :t], tokens[:, t + 1 :]], dim=1).flatten(1)
        return self.head(torch.cat([interest, target, others], dim=1)).squeeze(-1)
