"""DCAL's objectives: the uncertainty-weighted sum of the branch losses (Kendall, Gal and Cipolla,
CVPR 2018, as FairMOT uses it and DCAL follows) and the batch-hard triplet loss of re-ID (Hermans,
Beyer and Leibe, 2017)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from interplay.core.errors import ConfigError


class UncertaintyWeightedLoss(nn.Module):
    """``sum_i exp(-w_i) L_i + w_i`` with one learnable ``w_i`` (a log-variance, initialised at 0) per
    named loss. A loss that is absent from a call (e.g. PWCA in evaluation) contributes nothing."""

    def __init__(self, names: Sequence[str], init: float = 0.0) -> None:
        super().__init__()
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"UncertaintyWeightedLoss needs distinct loss names, got {list(names)}")
        self.names = list(names)
        self.log_vars = nn.Parameter(torch.full((len(names),), float(init)))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        unknown = [k for k in losses if k not in self.names]
        if unknown:
            raise ConfigError(f"unknown loss name(s) {unknown}; expected some of {self.names}")
        total = self.log_vars.new_zeros(())
        for i, name in enumerate(self.names):
            if name in losses:
                w = self.log_vars[i]
                total = total + torch.exp(-w) * losses[name] + w
        return total

    def weights(self) -> dict[str, float]:
        """The current ``exp(-w_i)`` of every loss."""
        return {n: float(torch.exp(-w)) for n, w in zip(self.names, self.log_vars.detach())}


def pairwise_distances(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Euclidean distances ``[N, M]`` (with a floor inside the root, so gradients stay finite)."""
    y = x if y is None else y
    d2 = x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(0) - 2.0 * x @ y.transpose(0, 1)
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet_loss(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """``mean_a max(0, max_p d(a, p) - min_n d(a, n) + margin)`` over the anchors that have both a
    positive (same label, another sample) and a negative in the batch; 0 when none has."""
    if features.shape[0] != labels.shape[0]:
        raise ConfigError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} disagree")
    dist = pairwise_distances(features)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(1) & negative.any(1)
    if not bool(valid.any()):
        return features.sum() * 0.0
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(1)
    return torch.relu(hardest_pos - hardest_neg + margin)[valid].mean()
