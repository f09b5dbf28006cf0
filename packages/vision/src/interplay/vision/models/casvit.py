"""CAS-ViT (Zhang et al., "CAS-ViT: Convolutional Additive Self-attention Vision Transformers for
Efficient Mobile Applications", arXiv 2408.03703, 2024).

Convolutional additive token mixer (CATM, the paper's Section 3), as in the released ``rcvit.py``::

    q, k, v = split(Conv1x1_{C -> 3C}(x))                      (no bias)
    S(t)  = t * sigmoid(Conv1x1_{C -> 1}(ReLU(BN(DW3x3 t))))    spatial operation
    Ch(t) = t * sigmoid(Conv1x1_{C -> C}(GAP t))                channel operation (no bias)
    Phi   = Ch o S    (separate weights for q and k)
    out   = DW3x3_proj(DW3x3(Phi(q) + Phi(k)) * v)

Block: ``x += LocalIntegration(x)`` (1x1, BN, DW3x3, GELU, 1x1); ``x += CATM(BN x)``;
``x += MLP4(BN x)``. Stem: two Conv3x3 stride 2 (BN, ReLU); Conv3x3 stride 2 + BN between stages;
BN before the pooled head. The released models carry a distillation head (DeiT style) and their
published parameter counts include it: this module has ``head`` and ``head_dist`` and returns their
average in training and evaluation alike (the released code returns the pair in training for the
distillation loss; a caller that distils reads ``forward_head(x, pre_logits=True)`` and applies
``head.fc`` / ``head_dist`` itself).

No softmax attention happens here (the "similarity" is a sum of sigmoid-gated maps), so nothing
goes through :func:`interplay.core.attention.attend`. The official key layout (``network.{2i}`` =
stage ``i``, ``network.{2i+1}`` = the following down-sampling, ``dist_head``, bare ``head``) is
remapped by :func:`checkpoint_filter_fn`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import Tensor, nn

from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import ConvMlp

__all__ = [
    "AdditiveBlock",
    "AdditiveTokenMixer",
    "CASViT",
    "ChannelOperation",
    "SpatialOperation",
    "checkpoint_filter_fn",
]


# candidate for interplay.core: a sigmoid spatial gate (one map per position, CBAM-like); kept as a
# Sequential so its indices (block.0 / block.1 / block.3) match the released checkpoints.
class SpatialOperation(nn.Module):
    """``S(t) = t * sigmoid(Conv1x1_{C->1}(ReLU(BN(DW3x3 t))))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, 1, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.block(x)


# candidate for interplay.core: a sigmoid channel gate from global context (SE without the
# bottleneck); the same shape of operation as ECA's.
class ChannelOperation(nn.Module):
    """``Ch(t) = t * sigmoid(Conv1x1(GAP t))`` (no bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim, 1, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.block(x)


class AdditiveTokenMixer(nn.Module):
    """CATM: ``proj(dwc(Phi_q(q) + Phi_k(k)) * v)`` with ``Phi = Ch o S`` (module docstring)."""

    def __init__(self, dim: int, attn_bias: bool = False, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=attn_bias)
        self.oper_q = nn.Sequential(SpatialOperation(dim), ChannelOperation(dim))
        self.oper_k = nn.Sequential(SpatialOperation(dim), ChannelOperation(dim))
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        out = self.proj(self.dwc(self.oper_q(q) + self.oper_k(k)) * v)
        return self.proj_drop(out)


class LocalIntegration(nn.Module):
    """``Conv1x1 -> BN -> DW3x3 -> GELU -> Conv1x1`` (the released ``network`` indices 0-4)."""

    def __init__(self, dim: int, ratio: float = 1.0) -> None:
        super().__init__()
        mid = round(ratio * dim)
        self.network = nn.Sequential(
            nn.Conv2d(dim, mid, 1),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 3, padding=1, groups=mid),
            nn.GELU(),
            nn.Conv2d(mid, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


class AdditiveBlock(nn.Module):
    """``x += LocalInt(x); x += CATM(BN x); x += MLP(BN x)`` (drop path on the last two)."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        attn_bias: bool = False,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.local_perception = LocalIntegration(dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = AdditiveTokenMixer(dim, attn_bias=attn_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.local_perception(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Embedding(nn.Module):
    """Down-sampling between stages: Conv3x3 stride 2 (bias) + BN."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class CASStage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)


class CASViT(VisionBackbone):
    """CAS-ViT: stem (stride 4), four stages of :class:`AdditiveBlock` (strides 4, 8, 16, 32), BN,
    average pooling, classifier ``head`` and distillation ``head_dist`` (averaged)."""

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 6, 3),
        dims: Sequence[int] = (48, 64, 128, 256),
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        attn_bias: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        distillation: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.in_chans = in_chans
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(dims[0] // 2),
            nn.ReLU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
            nn.BatchNorm2d(dims[0]),
            nn.ReLU(),
        )
        total = sum(depths)
        stages, start = [], 0
        for i, depth in enumerate(depths):
            rates = [drop_path_rate * (start + j) / max(total - 1, 1) for j in range(depth)]
            blocks = [AdditiveBlock(dims[i], mlp_ratio, attn_bias, drop_rate, r) for r in rates]
            stages.append(CASStage(Embedding(dims[i - 1], dims[i]) if i else nn.Identity(), blocks))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(dims[i], 4 * 2**i, f"stages.{i}") for i in range(len(depths))]
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = ClassifierHead(dims[-1], num_classes, pool="avg", drop_rate=drop_rate)
        self.distillation = distillation
        self.head_dist: nn.Module | None = None
        if distillation:
            self.head_dist = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check_input(x, channels=self.in_chans)
        n = len(self.stages)
        wanted = set(range(n) if indices is None else (i % n for i in indices))
        x = self.patch_embed(x)
        outs = []
        for i in range(max(wanted) + 1):
            x = self.stages[i].downsample(x)
            x = checkpoint_seq(self.stages[i].blocks, x, self.grad_checkpointing)
            if i in wanted:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.forward_intermediates(x)[-1])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.head(x, pre_logits=True)
        if pre_logits:
            return pooled
        if self.head_dist is None:
            return self.head.fc(pooled)
        # the released model averages the two heads at inference; we do so in training too
        return (self.head.fc(pooled) + self.head_dist(pooled)) / 2

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _init_weights(module: nn.Module) -> None:
    # as released: truncated-normal linear layers, PyTorch's default for the convolutions
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_NETWORK = re.compile(r"^network\.(\d+)\.(.*)$")


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Released ``rcvit_*`` checkpoints -> ours: ``network.{2i}.{j}`` -> ``stages.{i}.blocks.{j}``,
    ``network.{2i+1}`` -> ``stages.{i+1}.downsample``, ``head`` -> ``head.fc``, ``dist_head`` ->
    ``head_dist``."""
    out = {}
    for key, value in state.items():
        match = _NETWORK.match(key)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            if index % 2 == 0:
                key = f"stages.{index // 2}.blocks.{rest}"
            else:
                key = f"stages.{index // 2 + 1}.downsample.{rest}"
        elif key.startswith("dist_head."):
            key = "head_dist." + key.removeprefix("dist_head.")
        elif key.startswith("head.") and not key.startswith("head.fc."):
            key = "head.fc." + key.removeprefix("head.")
        out[key] = value
    return out


_SOURCE = "https://github.com/Tianfang-Zhang/CAS-ViT"
_REG = dict(test_input_size=32, family="casvit", checkpoint_filter_fn=checkpoint_filter_fn, source=_SOURCE)


@register_model(paper_params=3.20e6, paper_gmacs=0.56, paper_top1=78.7, **_REG)
def casvit_xs(num_classes: int = 1000, **kw) -> CASViT:
    """CAS-ViT (Zhang et al., arXiv 2024), CAS-ViT-XS: depths (2, 2, 4, 2), widths (48, 56, 112, 220)."""
    return CASViT((2, 2, 4, 2), (48, 56, 112, 220), num_classes=num_classes, **kw)


@register_model(paper_params=5.76e6, paper_gmacs=0.93, paper_top1=81.1, **_REG)
def casvit_s(num_classes: int = 1000, **kw) -> CASViT:
    """CAS-ViT (Zhang et al., arXiv 2024), CAS-ViT-S: depths (3, 3, 6, 3), widths (48, 64, 128, 256)."""
    return CASViT((3, 3, 6, 3), (48, 64, 128, 256), num_classes=num_classes, **kw)


@register_model(paper_params=12.42e6, paper_gmacs=1.89, paper_top1=83.0, **_REG)
def casvit_m(num_classes: int = 1000, **kw) -> CASViT:
    """CAS-ViT (Zhang et al., arXiv 2024), CAS-ViT-M: depths (3, 3, 6, 3), widths (64, 96, 192, 384)."""
    return CASViT((3, 3, 6, 3), (64, 96, 192, 384), num_classes=num_classes, **kw)


@register_model(paper_params=21.76e6, paper_gmacs=3.55, paper_top1=84.1, **_REG)
def casvit_t(num_classes: int = 1000, **kw) -> CASViT:
    """CAS-ViT (Zhang et al., arXiv 2024), CAS-ViT-T: depths (3, 3, 6, 3), widths (96, 128, 256, 512)."""
    return CASViT((3, 3, 6, 3), (96, 128, 256, 512), num_classes=num_classes, **kw)
