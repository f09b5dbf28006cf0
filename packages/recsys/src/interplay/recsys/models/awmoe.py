"""AW-MoE: Attention Weighted Mixture of Experts with contrastive learning (Gong, Chen, Ma, Xiao, Wang,
Tang, Liu, Xu, Long and Jiang, JD.com, ICDE 2023, "Attention Weighted Mixture of Experts with
Contrastive Learning for Personalized Ranking in E-commerce", arXiv:2306.05011).

The user behaviour sequence ``b_1..b_L`` feeds both the experts and the gate network. The equations
below are numbered for this module (the paper's own numbering was not available to check offline).

Gate network: a *gate unit* maps every behaviour to an expert vector, an *activation unit* (DIN's,
:class:`~interplay.recsys.models.din.ActivationUnit`) scores each behaviour against the query (in
JD search the query; here the target item ``t``, the field the sequence shares its vocabulary with)::

    g_j = W_g b_j + c_g                       in R^K       (1) gate unit, Linear d -> K
    a_j = MLP([b_j, t, b_j - t, b_j * t])     in R         (2) activation unit, no softmax over j
    z   = sum_{j real} a_j g_j                in R^K       (3) gate network output
    w   = softmax(z)                                       (4) expert weights

Experts ``E_k`` (MLPs, one logit each) read all field tokens flattened plus the DIN attention-pooled
sequence ``v = sum_j a'_j b_j`` (a second activation unit, so the experts' interest vector and the
gate's routing scores are learned separately)::

    y = sum_k w_k E_k([tokens, v])                         (5) pre-sigmoid logit

Choice in (4): the paper gates the experts with the attention-weighted sum (3); we normalise it with
a softmax over experts (``gate_normalization="softmax"``, the default) so that the expert weights
are a convex combination and a user with no behaviour (``z = 0``) gets the uniform average of the
experts instead of a constant zero logit. ``gate_normalization="none"`` uses ``w = z`` as is.

Long-tail users and contrastive learning: in training, a view of each sequence drops every real
behaviour independently with probability ``mask_prob`` (padding is never "dropped", it is already
absent), simulating a user with few behaviours. Its gate output ``z^(2)`` (3) is contrasted with
the full sequence's ``z^(1)`` (``contrast_with="full"``, the default: a long-tail user's routing is
pulled towards the one a full history gives) or with a second masked view's
(``contrast_with="masked"``). Gate outputs are taken before the softmax (a softmax output is
positive, so cosine similarities between them would all be high) and contrasted with a symmetric
InfoNCE over in-batch negatives (:func:`info_nce`)::

    s_ij = cos(z^(1)_i, z^(2)_j) / tau
    CL   = 1/2 [ mean_i -log softmax_j(s_ij)[i] + mean_j -log softmax_i(s_ij)[j] ]    (6)
    loss = BCE(y, label) + lambda CL                                                (7)

The BCE path (``forward``) always sees the full, unmasked sequence; masking only makes the
contrastive views. ``training_step_outputs`` returns ``(logits, {"contrastive": lambda * CL})`` for
the CTR task to add to its BCE; in evaluation the task calls ``forward`` and nothing is masked.

Defaults: ``experts=4``, ``mask_prob=0.3``, ``cl_weight`` (lambda) ``0.1``, ``temperature`` (tau)
``0.1``. These are Interplay's defaults, not values confirmed from the paper; set the paper's values
in the reproduction config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.recsys.layout import FeatureLayout
from interplay.recsys.models.din import (
    MLP,
    ActivationUnit,
    embed_behaviours,
    require_sequence,
    weighted_sum_pool,
)
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.registry import REGISTRY

GATE_NORMALIZATIONS = ("softmax", "none")
CONTRAST_WITH = ("full", "masked")


def mask_behaviours(mask: Tensor, p: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Drop each real behaviour (``mask`` True) independently with probability ``p``; padding stays False.

    Returns the new boolean keep-mask ``[B, L]`` (a subset of ``mask``).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {p}")
    mask = mask.bool()
    if p == 0.0:
        return mask
    noise = torch.rand(mask.shape, generator=generator, device=mask.device)
    return mask & (noise >= p)


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE, Eq. (6): row ``i`` of ``z1`` is positive with row ``i`` of ``z2``, negative with
    every other row of the batch (both directions). Cosine similarity; a zero vector has similarity 0.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"info_nce needs two [B, K] views of the same shape, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T / temperature
    labels = torch.arange(z1.shape[0], device=z1.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@REGISTRY.models.register(
    "awmoe", "AW-MoE: behaviour-attention-gated experts + contrastive long-tail learning (Gong et al., 2023)"
)
class AWMoE(nn.Module):
    """Attention Weighted Mixture of Experts. ``forward(batch) -> logits [B]`` (pre-sigmoid).

    Args:
        layout: the feature layout (filled by the engine); needs a behaviour sequence.
        dim: embedding size.
        experts: number of experts ``K``.
        expert_hidden: hidden sizes of each expert MLP (each ends in one logit).
        attention_hidden: hidden sizes of the activation units' MLPs.
        activation: ``"prelu"`` (default), ``"dice"`` or ``"relu"`` in experts and activation units.
        dropout: dropout after each hidden layer of the experts.
        gate_normalization: ``"softmax"`` (default) or ``"none"``, Eq. (4).
        mask_prob: probability of dropping each behaviour in a contrastive view.
        cl_weight: lambda of Eq. (7); the returned auxiliary loss is already multiplied by it.
        temperature: tau of Eq. (6).
        use_contrastive: False turns the auxiliary loss off (``training_step_outputs`` returns ``{}``).
        contrast_with: ``"full"`` (default): the positive pair is the full sequence's gate output and
            a masked view's; ``"masked"``: two independently masked views.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        dim: int = 16,
        experts: int = 4,
        expert_hidden: Sequence[int] = (200, 80),
        attention_hidden: Sequence[int] = (36,),
        activation: str = "prelu",
        dropout: float = 0.0,
        gate_normalization: str = "softmax",
        mask_prob: float = 0.3,
        cl_weight: float = 0.1,
        temperature: float = 0.1,
        use_contrastive: bool = True,
        contrast_with: str = "full",
    ) -> None:
        super().__init__()
        self.target_index = require_sequence(layout, "AW-MoE")
        if experts < 1:
            raise ValueError(f"experts must be >= 1, got {experts}")
        if gate_normalization not in GATE_NORMALIZATIONS:
            raise ValueError(
                f"unknown gate_normalization '{gate_normalization}' "
                f"(expected {' or '.join(GATE_NORMALIZATIONS)})"
            )
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if contrast_with not in CONTRAST_WITH:
            raise ValueError(
                f"unknown contrast_with '{contrast_with}' (expected {' or '.join(CONTRAST_WITH)})"
            )
        self.contrast_with = contrast_with
        self.layout = layout
        self.gate_normalization = gate_normalization
        self.mask_prob, self.cl_weight, self.temperature = mask_prob, cl_weight, temperature
        self.use_contrastive = use_contrastive
        self.embedding = FeatureEmbedding(layout, dim)
        # gate network, Eqs. (1)-(3)
        self.gate_unit = nn.Linear(dim, experts)
        self.activation_unit = ActivationUnit(dim, tuple(attention_hidden), activation=activation)
        # experts' view of the sequence: DIN pooling with its own activation unit
        self.interest_unit = ActivationUnit(dim, tuple(attention_hidden), activation=activation)
        in_dim = (layout.n_fields + 1) * dim
        self.experts = nn.ModuleList(
            MLP(in_dim, tuple(expert_hidden), 1, activation=activation, dropout=dropout)
            for _ in range(experts)
        )

    def gate_vector(self, items: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Gate network output ``z = sum_j a_j g_j`` (Eq. (3)), ``[B, K]``, before normalisation."""
        mask = mask.bool()
        scores = self.activation_unit(items, target, mask)  # already 0 at masked positions
        expert_vectors = self.gate_unit(items)  # [B, L, K]
        return torch.einsum("bl,blk->bk", scores * mask.to(scores.dtype), expert_vectors)

    def normalize_gate(self, z: Tensor) -> Tensor:
        return torch.softmax(z, dim=-1) if self.gate_normalization == "softmax" else z

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        tokens = self.embedding(batch)
        items, mask = embed_behaviours(self.embedding, batch)
        return tokens, items, mask, tokens[:, self.target_index]

    def gate_weights(self, batch: dict[str, Tensor]) -> Tensor:
        """Expert weights ``w`` of Eq. (4), ``[B, K]``."""
        _, items, mask, target = self._inputs(batch)
        return self.normalize_gate(self.gate_vector(items, target, mask))

    def _logits(self, tokens: Tensor, items: Tensor, mask: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits [B], gate vector z [B, K])``."""
        interest = weighted_sum_pool(items, self.interest_unit(items, target, mask), mask)
        x = torch.cat([tokens.flatten(1), interest], dim=1)
        outputs = torch.cat([expert(x) for expert in self.experts], dim=-1)  # [B, K]
        z = self.gate_vector(items, target, mask)
        return (self.normalize_gate(z) * outputs).sum(-1), z

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self._logits(*self._inputs(batch))[0]

    def contrastive_loss(
        self, items: Tensor, target: Tensor, mask: Tensor, full: Tensor | None = None
    ) -> Tensor:
        """Unweighted CL of Eq. (6). ``contrast_with="full"``: the gate output of the whole sequence
        (``full``, computed here when not given) against that of a masked view, pulling a simulated
        long-tail user's routing towards the one its full history gives; ``"masked"``: two
        independently masked views."""
        z2 = self.gate_vector(items, target, mask_behaviours(mask, self.mask_prob))
        if self.contrast_with == "full":
            z1 = self.gate_vector(items, target, mask) if full is None else full
        else:
            z1 = self.gate_vector(items, target, mask_behaviours(mask, self.mask_prob))
        return info_nce(z1, z2, self.temperature)

    def training_step_outputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(logits [B], {"contrastive": lambda * CL})``; ``{}`` when ``use_contrastive`` is False."""
        tokens, items, mask, target = self._inputs(batch)
        logits, z = self._logits(tokens, items, mask, target)
        if not self.use_contrastive:
            return logits, {}
        return logits, {"contrastive": self.cl_weight * self.contrastive_loss(items, target, mask, full=z)}
