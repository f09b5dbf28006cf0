"""Attention rollout (Abnar and Zuidema, ACL 2020) as DCAL uses it to pick its local queries
(Zhu et al., CVPR 2022, eq. 2):

    S_bar_i = 0.5 S_i + 0.5 E          (E: identity, for the residual connection; rows re-normalised)
    S_hat_i = S_bar_i S_bar_{i-1} ... S_bar_1

The first row of ``S_hat`` is how much the class token accumulated from each input token; the top
``R`` patch tokens by that response are GLCA's local queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from interplay.core.errors import ConfigError

HEAD_FUSIONS = ("mean", "max", "min")


def attention_rollout(
    maps: Sequence[Tensor],
    *,
    residual: float = 0.5,
    head_fusion: str = "mean",
    renormalize: bool = True,
) -> Tensor:
    """Accumulated attention ``S_hat = S_bar_L ... S_bar_1`` ``[B, L, L]``.

    Args:
        maps: per block (first block first) attention ``[B, heads, L, L]`` or already fused ``[B, L, L]``.
        residual: weight of the identity (0.5 in DCAL and Abnar and Zuidema).
        head_fusion: how heads are merged first (``mean`` as in the paper; ``max`` / ``min``).
        renormalize: divide each row of ``S_bar`` by its sum (a no-op for softmax rows; it keeps
            maps whose rows do not sum to one, e.g. masked rows, stochastic).
    """
    if not maps:
        raise ConfigError("attention_rollout needs at least one attention map")
    if head_fusion not in HEAD_FUSIONS:
        raise ConfigError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got '{head_fusion}'")
    if not 0.0 <= residual <= 1.0:
        raise ConfigError(f"residual must be in [0, 1], got {residual}")
    rollout: Tensor | None = None
    for i, s in enumerate(maps):
        if s.dim() == 4:
            s = s.mean(1) if head_fusion == "mean" else s.amax(1) if head_fusion == "max" else s.amin(1)
        if s.dim() != 3 or s.shape[-1] != s.shape[-2]:
            raise ConfigError(f"attention map {i} must be [B, (heads,) L, L], got {tuple(maps[i].shape)}")
        eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
        s_bar = (1.0 - residual) * s + residual * eye
        if renormalize:
            s_bar = s_bar / s_bar.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(s_bar.dtype).tiny)
        rollout = s_bar if rollout is None else s_bar @ rollout
    return rollout


def num_local_queries(num_patches: int, ratio: float) -> int:
    """``R``: ``ratio`` of the patch tokens, rounded, at least one (10 % FGVC, 30 % re-ID)."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"local_ratio must be in (0, 1], got {ratio}")
    return max(1, min(num_patches, math.floor(ratio * num_patches + 0.5)))


def top_response_tokens(rollout: Tensor, ratio: float, num_prefix_tokens: int = 1) -> Tensor:
    """Indices (into the token sequence) ``[B, R]`` of the patch tokens with the highest class-token
    rollout response ``S_hat[:, 0, prefix:]``, highest first."""
    response = rollout[:, 0, num_prefix_tokens:]
    r = num_local_queries(response.shape[-1], ratio)
    return response.topk(r, dim=-1).indices + num_prefix_tokens
