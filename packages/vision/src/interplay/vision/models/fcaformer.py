"""FcaFormer: Forward Cross Attention in Hybrid Vision Transformer (Zhang, Hu, Zhang; ICCV 2023).

Hybrid four-stage network:

* Stem ``Conv3x3 s2 -> BN -> GELU -> Conv3x3 s2 -> BN`` (``Conv2d_BN``: conv without bias + BN).
* Stages 1-2: ConvNeXt blocks ``x + gamma * PW2(GELU(PW1(LN(DW7x7 x))))`` (layer scale 1e-6).
* Stages 3-4: FCA blocks. Block ``i`` of a stage attends its own tokens **and** the cross tokens
  (Sec. 3.2, "forward cross attention") of the earlier blocks ``max(0, i - 12) .. i - 1`` of the same
  stage. Block ``j`` emits its cross tokens ``s_j = DW7x7_{stride 4}(x_j)`` (token merge: one token per
  4 x 4 patch, taken after its attention); before use they are multiplied by learnable per-token
  scale factors (token enhancement) and normalised by their own LayerNorm ``s_norm``. With
  ``q, k_x, v_x`` from ``LN(x)`` and ``k_s, v_s`` from ``s_norm(s * scale)`` through the same ``qkv``:

      attn = softmax([q k_x^T d^-1/2 + B_pos, q k_s^T d^-1/2 + B_s]) [v_x; v_s]

  where ``B_pos`` is LeViT's translation-invariant bias over ``(|dy|, |dx|)`` and ``B_s`` a learned
  bias per (head, cross token). Then ``x = x + gamma_1 proj(attn)``; ``x = BN(DW3x3(x))`` (the
  released code replaces ``x`` by this local conv, no residual); ``x = x + gamma_2 MLP(LN x)``, where
  the MLP holds its own LayerNorm first (as released, so two norms precede ``fc1``).
* Between stages ``Conv1x1-BN -> GELU -> DW3x3 s2-BN -> GELU -> Conv1x1-BN``; head: mean of the last
  stage's tokens -> LayerNorm -> Linear.

Attention runs through :func:`interplay.core.attention.attend` with the concatenated bias; the
position-bias index is :func:`interplay.core.attention.bias.levit_attention_bias_index`.

Resolution: the released model is built for one input size (``img_size``, default 224): the bias
tables have one entry per offset of the stage-3/4 grids and the cross-token biases and scale
factors one entry per cross token. At another input size the offset table is sliced (smaller grids:
exact, the offsets are a subset) or bicubically resized (larger grids), and the cross-token tables
are bilinearly resized per earlier block; at ``img_size`` nothing is resampled.

Parameter names follow the released code (``patch_embed.seq``, ``layer_k.blocks``,
``layer_k.downsample``, ``attention_biases``, ``s_token_bias``, ``s_scale_factors``, ``dw_conv``,
``local_conv``); :func:`checkpoint_filter_fn` only moves the classifier (``norm_head`` ->
``head.norm``, ``head`` -> ``head.fc``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from interplay.core.attention import attend
from interplay.core.attention.bias import levit_attention_bias_index
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model

__all__ = [
    "CxBlock",
    "FcaBlock",
    "FcaFormer",
    "checkpoint_filter_fn",
    "fcaformer_l1",
    "fcaformer_l2",
    "fcaformer_l3",
    "fcaformer_l4",
]

SOURCE = "https://github.com/hkzhang-git/FcaFormer"


class Conv2dBN(nn.Sequential):
    """Conv2d without bias (``c``) -> BatchNorm2d (``bn``), the released ``Conv2d_BN``."""

    def __init__(
        self, in_chs: int, out_chs: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chs, out_chs, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chs))


class PatchEmbed(nn.Module):
    """``Conv3x3 s2-BN -> GELU -> Conv3x3 s2-BN``: ``[B, 3, H, W]`` -> ``[B, C, H/4, W/4]``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(), Conv2dBN(dim // 2, dim, 3, 2, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class PatchMerging(nn.Module):
    """``Conv1x1-BN -> GELU -> DW3x3 s2-BN -> GELU -> Conv1x1-BN`` on ``[B, C, H, W]``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, 2, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class CxBlock(nn.Module):
    """ConvNeXt block on ``[B, C, H, W]``: ``x + gamma * PW2(GELU(PW1(LN(DW7x7 x))))``."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class NormMlp(nn.Module):
    """The released FCA MLP: ``LayerNorm -> Linear -> GELU -> Linear`` (its own norm first)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def cross_token_grid(h: int, w: int) -> tuple[int, int]:
    """Cross-token grid of an ``h x w`` map: DW7x7 stride 4 padding 3 gives ``ceil(h/4) x ceil(w/4)``."""
    return math.ceil(h / 4), math.ceil(w / 4)


class FcaBlock(nn.Module):
    """Forward cross attention block (module docstring) on tokens ``[B, N, C]`` of an ``h x w`` map.

    ``inner_depth``: position ``i`` in the stage (block ``i`` reads ``min(i, max_cross)`` earlier
    blocks' cross tokens); ``emit``: whether the block produces cross tokens for later blocks.
    ``resolution``: the stage grid the parameter tables are built for.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        resolution: tuple[int, int],
        *,
        inner_depth: int,
        max_cross: int,
        emit: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"FcaFormer: width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.resolution = resolution
        self.n_cross = min(inner_depth, max_cross)
        self.emit = emit
        self.gamma_1 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.gamma_2 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        if emit:
            self.dw_conv = nn.Conv2d(dim, dim, 7, stride=4, padding=3, groups=dim, bias=False)
        sh, sw = cross_token_grid(*resolution)
        if self.n_cross > 0:
            self.s_token_bias = nn.Parameter(torch.zeros(1, heads, 1, self.n_cross * sh * sw))
            self.s_norm = nn.LayerNorm(dim)
            self.s_scale_factors = nn.Parameter(torch.ones(1, self.n_cross * sh * sw, 1))
        self.norm1 = nn.LayerNorm(dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, resolution[0] * resolution[1]))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = NormMlp(dim, int(dim * mlp_ratio))

    # -- parameter tables at the actual resolution -------------------------------------------------
    def position_bias(self, h: int, w: int) -> Tensor:
        """LeViT bias ``[heads, h*w, h*w]``: ``table[:, |dy| * w + |dx|]`` on the ``h x w`` grid."""
        h0, w0 = self.resolution
        table = self.attention_biases.view(self.heads, h0, w0)
        if h <= h0 and w <= w0:  # the offsets of a smaller grid are a subset: exact
            table = table[:, :h, :w]
        else:
            table = F.interpolate(table.unsqueeze(0), size=(h, w), mode="bicubic", align_corners=False)[0]
        index, _ = levit_attention_bias_index((h, w), device=table.device)
        return table.reshape(self.heads, h * w)[:, index]

    def _cross_table(self, table: Tensor, grid: tuple[int, int]) -> Tensor:
        """Cross-token table ``[..., n_cross * S0]`` -> ``[..., n_cross * S]`` on the cross grid."""
        sh0, sw0 = cross_token_grid(*self.resolution)
        if grid == (sh0, sw0):
            return table
        lead = table.shape[:-1]
        t = table.reshape(-1, self.n_cross, sh0, sw0)
        t = F.interpolate(t, size=grid, mode="bilinear", align_corners=False)
        return t.reshape(*lead, self.n_cross * grid[0] * grid[1])

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, hw: tuple[int, int], s: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``x``: ``[B, h*w, C]``; ``s``: the earlier blocks' cross tokens ``[B, n_cross * S, C]``.
        Returns the new tokens and this block's cross tokens ``[B, S, C]`` (``None`` if it emits none)."""
        b, n, c = x.shape
        h, w = hw
        shortcut = x
        q, k, v = (
            self.qkv(self.norm1(x))
            .reshape(b, n, 3, self.heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        bias = self.position_bias(h, w).unsqueeze(0)  # [1, heads, N, N]
        if self.n_cross > 0:
            if s is None:
                raise ValueError(f"FCA block {self.n_cross} expects cross tokens of earlier blocks")
            grid = cross_token_grid(h, w)
            scale = self._cross_table(self.s_scale_factors.transpose(1, 2), grid).transpose(1, 2)
            s = self.s_norm(s * scale)
            # keys and values of the cross tokens through the shared qkv projection (their queries are unused)
            kv = F.linear(s, self.qkv.weight[c:], None if self.qkv.bias is None else self.qkv.bias[c:])
            ks, vs = kv.reshape(b, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            k, v = torch.cat((k, ks), dim=2), torch.cat((v, vs), dim=2)
            s_bias = self._cross_table(self.s_token_bias, grid)  # [1, heads, 1, n_s]
            bias = torch.cat((bias, s_bias.expand(1, self.heads, n, s_bias.shape[-1])), dim=-1)
        out = attend(q, k, v, bias=bias).transpose(1, 2).reshape(b, n, c)
        x = shortcut + self.drop_path(self.gamma_1 * self.proj(out))
        x = x.transpose(1, 2).reshape(b, c, h, w)
        s_new = self.dw_conv(x).flatten(2).transpose(1, 2) if self.emit else None
        x = self.local_conv(x).flatten(2).transpose(1, 2)
        x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        return x, s_new


class CxLayer(nn.Module):
    """ConvNeXt stage: ``blocks`` then the (optional) ``downsample`` to the next stage."""

    def __init__(self, dim: int, out_dim: int | None, depth: int, rates: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[CxBlock(dim, rates[j]) for j in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None


class FcaLayer(nn.Module):
    """FCA stage: blocks carrying the list of cross tokens forward, then the optional ``downsample``."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        heads: int,
        resolution: tuple[int, int],
        rates: Sequence[float],
        *,
        max_cross: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.max_cross = max_cross
        self.blocks = nn.ModuleList(
            FcaBlock(
                dim,
                heads,
                resolution,
                inner_depth=i,
                max_cross=max_cross,
                emit=i < depth - 1,
                mlp_ratio=mlp_ratio,
                drop_path=rates[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward_blocks(self, x: Tensor, grad_checkpointing: bool = False) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]`` through every block of the stage."""
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cross: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            s = torch.cat(cross[-self.max_cross :], dim=1) if i > 0 and block.n_cross > 0 else None
            if grad_checkpointing and torch.is_grad_enabled():
                x, s_new = checkpoint(block, x, (h, w), s, use_reentrant=False)
            else:
                x, s_new = block(x, (h, w), s)
            if s_new is not None:
                cross.append(s_new)
        return x.transpose(1, 2).reshape(b, c, h, w)


class FcaFormer(VisionBackbone):
    """FcaFormer (see the module docstring): ``dims`` / ``depths`` per stage, ``heads`` for stages 3-4."""

    def __init__(
        self,
        dims: Sequence[int] = (64, 128, 192, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        heads: Sequence[int] = (6, 10),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        mlp_ratio: float = 4.0,
        max_cross: int = 12,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(dims) != 4 or len(depths) != 4 or len(heads) != 2:
            raise ConfigError(
                f"FcaFormer: 4 dims and depths and 2 head counts needed, got {dims}, {depths}, {heads}"
            )
        if img_size % 32:
            raise ConfigError(f"FcaFormer: img_size must be divisible by 32, got {img_size}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.num_features = dims[-1]
        total = sum(depths)
        flat = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        rates = [flat[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(4)]
        self.patch_embed = PatchEmbed(in_chans, dims[0])
        self.layer_0 = CxLayer(dims[0], dims[1], depths[0], rates[0])
        self.layer_1 = CxLayer(dims[1], dims[2], depths[1], rates[1])
        r2, r3 = img_size // 16, img_size // 32
        self.layer_2 = FcaLayer(
            dims[2],
            dims[3],
            depths[2],
            heads[0],
            (r2, r2),
            rates[2],
            max_cross=max_cross,
            mlp_ratio=mlp_ratio,
        )
        self.layer_3 = FcaLayer(
            dims[3], None, depths[3], heads[1], (r3, r3), rates[3], max_cross=max_cross, mlp_ratio=mlp_ratio
        )
        self.feature_info = [FeatureInfo(d, 4 * 2**i, f"layer_{i}") for i, d in enumerate(dims)]
        self.head = ClassifierHead(
            self.num_features,
            num_classes,
            pool="avg",
            norm=nn.LayerNorm(self.num_features),
            drop_rate=drop_rate,
        )
        self.apply(_init_weights)

    @property
    def layers(self) -> list[nn.Module]:
        return [self.layer_0, self.layer_1, self.layer_2, self.layer_3]

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check_input(x, multiple=32, channels=self.in_chans)
        wanted = list(range(4)) if indices is None else [i % 4 for i in indices]
        outs: dict[int, Tensor] = {}
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            if i > max(wanted):
                break
            if isinstance(layer, CxLayer):
                x = checkpoint_seq(layer.blocks, x, enabled=self.grad_checkpointing)
            else:
                x = layer.forward_blocks(x, self.grad_checkpointing)
            outs[i] = x
            if layer.downsample is not None:
                x = layer.downsample(x)
        return [outs[i] for i in wanted]


def _init_weights(module: nn.Module) -> None:
    # the released init: truncated normal (std 0.02) for Linear and Conv2d weights, zero biases
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Official keys -> ours: ``norm_head.*`` -> ``head.norm.*``, ``head.{weight,bias}`` -> ``head.fc.*``."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^norm_head\.", "head.norm.", key)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value
    return out


_COMMON = dict(
    input_size=224,
    test_input_size=32,
    family="fcaformer",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=SOURCE,
)


@register_model(paper_params=6.2e6, paper_gmacs=1.37, paper_top1=80.3, **_COMMON)
def fcaformer_l1(num_classes: int = 1000, **kwargs) -> FcaFormer:
    """FcaFormer-L1 (Zhang et al., ICCV 2023): dims (64, 128, 192, 320), depths (2, 2, 6, 2), heads 6 / 10.

    Paper / released code: 6.2M parameters, 1.37 GFLOPs, 80.3 % at 224^2.
    """
    return FcaFormer((64, 128, 192, 320), (2, 2, 6, 2), (6, 10), num_classes=num_classes, **kwargs)


@register_model(paper_params=16.3e6, paper_gmacs=3.6, paper_top1=83.1, **_COMMON)
def fcaformer_l2(num_classes: int = 1000, **kwargs) -> FcaFormer:
    """FcaFormer-L2 (Zhang et al., ICCV 2023): dims (96, 192, 320, 480), depths (2, 2, 7, 2), heads 10 / 15.

    Paper / released code: 16.3M parameters, 3.6 GFLOPs, 83.1 % at 224^2.
    """
    return FcaFormer((96, 192, 320, 480), (2, 2, 7, 2), (10, 15), num_classes=num_classes, **kwargs)


@register_model(paper_params=27.9e6, paper_gmacs=6.7, paper_top1=84.2, **_COMMON)
def fcaformer_l3(num_classes: int = 1000, **kwargs) -> FcaFormer:
    """FcaFormer-L3 (Zhang et al., ICCV 2023): dims (96, 192, 320, 512), depths (3, 6, 12, 3), heads 10 / 16.

    Paper / released code: 27.9M parameters, 6.7 GFLOPs, 84.2 % at 224^2.
    """
    return FcaFormer((96, 192, 320, 512), (3, 6, 12, 3), (10, 16), num_classes=num_classes, **kwargs)


@register_model(paper_params=65.6e6, paper_gmacs=14.5, paper_top1=84.9, **_COMMON)
def fcaformer_l4(num_classes: int = 1000, **kwargs) -> FcaFormer:
    """FcaFormer-L4 (Zhang et al., ICCV 2023): dims (128, 256, 512, 768), depths (3, 6, 12, 3), heads 16 / 24.

    Paper / released code: 65.6M parameters, 14.5 GFLOPs, 84.9 % at 224^2.
    """
    return FcaFormer((128, 256, 512, 768), (3, 6, 12, 3), (16, 24), num_classes=num_classes, **kwargs)
