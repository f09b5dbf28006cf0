"""Plain (dense, softmax-gated) mixture of experts for CTR: the baseline AW-MoE is compared with.

Jacobs et al., 1991 ("Adaptive Mixtures of Local Experts"), in the one-gate form that Ma et al., 2018
(MMoE) write as ``y = sum_i g(x)_i f_i(x)`` and that Gong et al., 2023 (AW-MoE) compare against.
With input ``x`` (all field tokens flattened, plus the masked mean of the behaviour items when the
layout has a sequence)::

    g(x) = softmax(W_g x)                    # [K], the gate sees the same input as the experts
    y(x) = sum_k g_k(x) E_k(x)               # E_k: MLP -> one logit per expert

and ``y`` is the pre-sigmoid logit. An empty sequence contributes a zero vector (``mean`` over no
items). Unlike AW-MoE the gate is a plain function of the pooled input: it neither attends over
the individual behaviours nor knows which of them relate to the target item.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interplay.recsys.layout import FeatureLayout
from interplay.recsys.models.din import MLP, embed_behaviours, masked_mean
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.registry import REGISTRY


@REGISTRY.models.register("moe", "MoE: softmax-gated mixture of MLP experts over fields + pooled behaviours")
class MoE(nn.Module):
    """Dense mixture of experts. ``forward(batch) -> logits [B]`` (pre-sigmoid).

    Args:
        layout: the feature layout (filled by the engine); a behaviour sequence is optional.
        dim: embedding size.
        experts: number of experts ``K``.
        expert_hidden: hidden sizes of each expert MLP (each ends in one logit).
        activation: ``"prelu"`` (default), ``"dice"`` or ``"relu"`` inside the experts.
        dropout: dropout after each hidden layer of the experts.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        experts: int = 4,
        expert_hidden: Sequence[int] = (200, 80),
        activation: str = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts must be >= 1, got {experts}")
        self.layout = layout
        self.embedding = FeatureEmbedding(layout, dim)
        self.use_sequence = layout.sequence is not None
        in_dim = (layout.n_fields + int(self.use_sequence)) * dim
        self.experts = nn.ModuleList(
            MLP(in_dim, tuple(expert_hidden), 1, activation=activation, dropout=dropout)
            for _ in range(experts)
        )
        self.gate = nn.Linear(in_dim, experts)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        """The shared input ``x`` of experts and gate, ``[B, in_dim]``."""
        parts = [self.embedding(batch).flatten(1)]
        if self.use_sequence:
            items, mask = embed_behaviours(self.embedding, batch)
            parts.append(masked_mean(items, mask))
        return torch.cat(parts, dim=1)

    def gate_weights(self, batch: dict[str, Tensor]) -> Tensor:
        """``g(x)`` ``[B, K]`` (rows sum to 1)."""
        return torch.softmax(self.gate(self.features(batch)), dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.features(batch)
        gate = torch.softmax(self.gate(x), dim=-1)
        outputs = torch.cat([expert(x) for expert in self.experts], dim=-1)  # [B, K]
        return (gate * outputs).sum(-1)
