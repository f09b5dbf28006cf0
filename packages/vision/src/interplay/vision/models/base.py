"""The backbone contract shared by every model of the zoo (timm's conventions, without timm).

Every registered model is a :class:`VisionBackbone`:

- ``forward_features(x)`` -> the last stage's output before pooling (``[B, C, H, W]`` for hierarchical
  models, ``[B, N, C]`` token sequences for plain ViTs);
- ``forward_head(x, pre_logits=False)`` -> logits, or the pooled features when ``pre_logits``;
- ``forward(x) = forward_head(forward_features(x))``;
- ``reset_classifier(num_classes)``: ``0`` replaces the classifier by the identity, so ``forward``
  returns pooled features of width ``num_features``;
- ``feature_info``: one :class:`FeatureInfo` (channels, reduction, module name) per stage;
  ``forward_intermediates(x)`` returns those stages' outputs as ``[B, C, H, W]`` maps, which is what
  ``create_model(..., features_only=True)`` exposes;
- ``set_grad_checkpointing(True)`` recomputes the stages' activations in backward
  (:func:`checkpoint_seq`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from interplay.core.errors import ConfigError


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output: ``num_chs`` channels at stride ``reduction``, produced by ``module``."""

    num_chs: int
    reduction: int
    module: str


def checkpoint_seq(blocks: Iterable[nn.Module], x: Tensor, enabled: bool = True) -> Tensor:
    """Run ``blocks`` in sequence, recomputing each block's activations in backward when ``enabled``."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if enabled and torch.is_grad_enabled() else block(x)
    return x


class ClassifierHead(nn.Module):
    """Global pooling -> optional norm -> dropout -> linear (identity when ``num_classes == 0``).

    ``pool``: ``"avg"`` over ``[B, C, H, W]`` maps, ``"token"`` (first token) or ``"mean"`` (mean over
    tokens) for ``[B, N, C]`` sequences, ``""`` when the input is already pooled ``[B, C]``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        pool: str = "avg",
        norm: nn.Module | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if pool not in {"avg", "token", "mean", ""}:
            raise ConfigError(f"unknown pooling '{pool}' (use avg, token, mean or '')")
        self.in_features = in_features
        self.pool = pool
        self.norm = norm if norm is not None else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool: str | None = None) -> None:
        if pool is not None:
            self.pool = pool
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.pool == "avg":
            x = x.mean(dim=(-2, -1))
        elif self.pool == "token":
            x = x[:, 0]
        elif self.pool == "mean":
            x = x.mean(dim=1)
        x = self.drop(self.norm(x))
        return x if pre_logits else self.fc(x)


class VisionBackbone(nn.Module):
    """Base class of the zoo. Subclasses set ``num_features``, ``feature_info``, ``head`` and implement
    :meth:`forward_intermediates` (stage outputs) and :meth:`forward_features`.

    The default :meth:`forward_features` returns the last map of :meth:`forward_intermediates`; models
    with a final norm or token sequences override it.
    """

    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]
    head: ClassifierHead
    grad_checkpointing: bool = False
    # copied from the registry entry by create_model: name, paper parameter count, paper GMACs, top-1
    pretrained_cfg: dict

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def check_input(self, x: Tensor, *, multiple: int = 1, channels: int | None = None) -> None:
        """Raise a ConfigError naming the model when ``x`` is not ``[B, C, H, W]`` with H, W divisible
        by ``multiple`` (window and halo sizes times the total stride)."""
        name = getattr(self, "pretrained_cfg", {}).get("name", type(self).__name__)
        if x.dim() != 4:
            raise ConfigError(f"{name} expects images [B, C, H, W], got shape {tuple(x.shape)}")
        if channels is not None and x.shape[1] != channels:
            raise ConfigError(f"{name} expects {channels} input channels, got {x.shape[1]}")
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ConfigError(
                f"{name} needs image height and width divisible by {multiple}, got {tuple(x.shape[-2:])}"
            )


class FeatureExtractor(nn.Module):
    """``features_only=True`` wrapper: returns the selected stages' maps ``[B, C_i, H / r_i, W / r_i]``."""

    def __init__(self, model: VisionBackbone, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        indices = list(range(n)) if out_indices is None else [i % n for i in out_indices]
        if any(not -n <= i < n for i in (out_indices or [])):
            raise ConfigError(f"out_indices {list(out_indices)} out of range for {n} stages")
        self.model = model
        self.out_indices = indices
        self.feature_info = [model.feature_info[i] for i in indices]

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = self.model.forward_intermediates(x, indices=self.out_indices)
        return outs

    def channels(self) -> list[int]:
        return [f.num_chs for f in self.feature_info]

    def reduction(self) -> list[int]:
        return [f.reduction for f in self.feature_info]
