"""HaloNet (Vaswani et al., "Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
CVPR 2021): blocked local self-attention with haloing, in the bottleneck blocks of a ResNet.

Blocked local attention (Sec. 3.1, Fig. 1): the map is cut into non-overlapping ``b x b`` query
blocks; each block attends the ``(b + 2h) x (b + 2h)`` window made of the block and a halo of ``h``
pixels around it. Keys and values outside the image are zeros (the map is zero-padded after the
key/value projection, as in the paper's haloing and timm's ``HaloAttn``): they still take part in the
softmax through their relative logits. Scores (Sec. 3.1, with the relative embeddings of Bello et al.
2019 / SASA)::

    logit[(x, y), (kx, ky)] = q . k / sqrt(d) + q . r^H[kx - x + W - 1] + q . r^W[ky - y + W - 1]

with ``W = b + 2h`` the window side, ``(x, y)`` the query's place in its block and ``(kx, ky)`` the
key's place in the window -- separable height and width embeddings ``r^H, r^W`` of shape
``[2W - 1, d]`` per layer, shared by the heads (the released-in-timm layout). A stride-2 block
subsamples the queries (a stride-2 1x1 query projection, so ``b / 2 x b / 2`` queries per block)
while keys and values keep the full-resolution window (Sec. 3.2, "strided self-attentive
downsampling").

Attention runs through :func:`interplay.core.attention.attend`: the blocks become the "heads" axis
(``[B * heads, blocks, b^2, d]`` against ``[B * heads, blocks, W^2, d]``) and the relative logits
are its additive ``bias``. Core's ``masks.halo`` describes the same neighbourhood on the flat token
sequence but *excludes* out-of-image keys instead of attending zeros, and it would materialise an
``L x L`` score matrix; the unfolded form is exact for the paper's zero padding and linear in ``L``.
Maps whose side is not a multiple of ``b`` are zero-padded at the bottom/right to whole blocks (the
padded keys behave exactly like the halo's zero padding; padded queries are dropped); with
``strict_size=True`` such inputs raise a :class:`ConfigError` instead.

Model family (Sec. 4 and the paper's model table; PAPERS.md): bottleneck ``1x1 (in -> m) BN ReLU
-> HaloAttn (q, k: m; v: m r_v; 8 heads) BN ReLU -> 1x1 (m r_v -> m r_b) BN + shortcut -> ReLU`` with
``m = 64, 128, 256, 512``, depths ``(3, 3, l3, 3)``, a ResNet 7x7 stem with max-pool, and for H3-H7
a final 1x1 conv to ``d_f`` channels before pooling. ``r_v`` widens only the values: queries and
keys keep ``m`` channels. With that reading the parameter counts reproduce the paper's for every
variant (H0 5.501M vs 5.5M ... H7 67.433M vs 67.4M); widening queries and keys too (as a timm-based
reproduction's ``br = r_v / r_b`` does) gives 71.0M for H5 and 199.8M for H7.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import attend
from interplay.core.errors import ConfigError
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import make_divisible
from interplay.vision.models.resnet import Bottleneck, ResNet


# candidate for interplay.core: content-dependent (query . embedding) relative logits, shared by
# HaloNet, BoTNet and SASA; core's relative biases (bias.py) are content-independent tables.
def relative_logits_2d(q: Tensor, height_rel: Tensor, width_rel: Tensor, window: int) -> Tensor:
    """Separable relative-position logits of a block of queries against a ``window x window`` window.

    ``q``: ``[N, bq, bq, d]`` (one query block per row of ``N``); ``height_rel``, ``width_rel``:
    ``[2 window - 1, d]``. Returns ``[N, bq * bq, window * window]`` with entry ``((x, y), (kx, ky))``
    equal to ``q[x, y] . height_rel[kx - x + window - 1] + q[x, y] . width_rel[ky - y + window - 1]``.
    """
    n, bq, _, _ = q.shape
    pos_q = torch.arange(bq, device=q.device)
    pos_k = torch.arange(window, device=q.device)
    index = pos_k[None, :] - pos_q[:, None] + window - 1  # [bq, window]: relative index per (query, key)
    logits_h = torch.einsum("nxyd,xkd->nxyk", q, height_rel[index])  # [N, x, y, kx]
    logits_w = torch.einsum("nxyd,ykd->nxyk", q, width_rel[index])  # [N, x, y, ky]
    return (logits_h[..., :, None] + logits_w[..., None, :]).reshape(n, bq * bq, window * window)


class RelPosEmbed(nn.Module):
    """The height and width embedding tables ``[2W - 1, d_head]`` of one halo attention layer."""

    def __init__(self, window: int, dim_head: int) -> None:
        super().__init__()
        self.window = window
        self.height_rel = nn.Parameter(torch.zeros(2 * window - 1, dim_head))
        self.width_rel = nn.Parameter(torch.zeros(2 * window - 1, dim_head))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.height_rel.shape[-1] ** -0.5
        nn.init.trunc_normal_(self.height_rel, std=std)
        nn.init.trunc_normal_(self.width_rel, std=std)

    def forward(self, q: Tensor) -> Tensor:
        return relative_logits_2d(q, self.height_rel, self.width_rel, self.window)


class HaloAttention(nn.Module):
    """Halo attention ``[B, dim, H, W] -> [B, dim_out, ceil(H / stride), ceil(W / stride)]``.

    ``q``: 1x1 conv ``dim -> dim`` (stride ``stride``); ``kv``: 1x1 conv ``dim -> dim + dim_out``
    (channels grouped per head as ``[k_h | v_h]``, timm's layout); ``pos_embed``: relative tables.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        *,
        stride: int = 1,
        num_heads: int = 8,
        block_size: int = 8,
        halo_size: int = 3,
        qkv_bias: bool = False,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if dim % num_heads or dim_out % num_heads:
            raise ConfigError(
                f"halo attention widths {dim} -> {dim_out} must be divisible by {num_heads} heads"
            )
        if stride not in (1, 2) or block_size % stride:
            raise ConfigError(
                f"halo attention needs stride 1 or 2 dividing the block size, got {stride}, {block_size}"
            )
        if block_size < 1 or halo_size < 0:
            raise ConfigError(
                f"halo attention needs block_size >= 1, halo_size >= 0, got {block_size}, {halo_size}"
            )
        self.num_heads = num_heads
        self.dim_head_qk = dim // num_heads
        self.dim_head_v = dim_out // num_heads
        self.block_size, self.halo_size, self.stride = block_size, halo_size, stride
        self.query_block = block_size // stride
        self.window = block_size + 2 * halo_size
        self.backend = backend
        self.q = nn.Conv2d(dim, dim, 1, stride=stride, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, dim + dim_out, 1, bias=qkv_bias)
        self.pos_embed = RelPosEmbed(self.window, self.dim_head_qk)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.q.weight, std=self.q.in_channels**-0.5)
        nn.init.trunc_normal_(self.kv.weight, std=self.kv.in_channels**-0.5)
        for conv in (self.q, self.kv):
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        self.pos_embed.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        b, bq, h, win = self.block_size, self.query_block, self.halo_size, self.window
        heads, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        n_h, n_w = -(-height // b), -(-width // b)  # blocks per side (last one zero-padded if partial)

        q = self.q(x)
        q_h, q_w = q.shape[-2:]
        q = F.pad(q, (0, n_w * bq - q_w, 0, n_h * bq - q_h))
        # [B, heads * d, n_h * bq, n_w * bq] -> [B * heads, blocks, bq * bq, d]
        q = q.reshape(batch * heads, dqk, n_h, bq, n_w, bq).permute(0, 2, 4, 3, 5, 1)
        q = q.reshape(batch * heads, n_h * n_w, bq, bq, dqk)

        # zero halo around the image (and up to whole blocks), then one window per block
        kv = F.pad(self.kv(x), (h, h + n_w * b - width, h, h + n_h * b - height))
        kv = kv.unfold(2, win, b).unfold(3, win, b)  # [B, heads * (dqk + dv), n_h, n_w, win, win]
        kv = kv.reshape(batch * heads, dqk + dv, n_h * n_w, win * win).permute(0, 2, 3, 1)
        k, v = kv.split([dqk, dv], dim=-1)

        bias = self.pos_embed(q.reshape(-1, bq, bq, dqk)).reshape(
            batch * heads, n_h * n_w, bq * bq, win * win
        )
        out = attend(q.reshape(batch * heads, n_h * n_w, bq * bq, dqk), k, v, bias=bias, backend=self.backend)

        # [B * heads, blocks, bq * bq, dv] -> [B, heads * dv, n_h * bq, n_w * bq], cropped to the query grid
        out = out.reshape(batch, heads, n_h, n_w, bq, bq, dv).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(batch, heads * dv, n_h * bq, n_w * bq)
        return out[:, :, :q_h, :q_w]

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, block={self.block_size}, halo={self.halo_size}, stride={self.stride}, "
            f"dim_head_qk={self.dim_head_qk}, dim_head_v={self.dim_head_v}"
        )


class HaloNet(ResNet):
    """HaloNet: a ResNet whose bottlenecks carry halo attention in place of the 3x3 convolution.

    ``block_size`` (b), ``halo_size`` (h), ``value_ratio`` (r_v), ``out_ratio`` (r_b), ``l3``,
    ``final_chs`` (d_f) as in the paper's model table. ``strict_size=True`` rejects inputs whose side
    is not a multiple of ``32 b`` (every stage then tiles exactly) instead of padding to whole blocks.
    """

    def __init__(
        self,
        *,
        block_size: int,
        halo_size: int,
        value_ratio: float,
        out_ratio: float,
        l3: int,
        final_chs: int | None = None,
        num_classes: int = 1000,
        num_heads: int = 8,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        strict_size: bool = False,
        attn_backend: str = "sdpa",
        **kwargs,
    ) -> None:
        out_chs = [make_divisible(m * out_ratio) for m in widths]
        value_chs = [make_divisible(m * value_ratio) for m in widths]

        def make(stage: int, index: int, in_chs: int, stride: int, drop_path: float) -> nn.Module:
            attn = partial(
                _halo_layer,
                num_heads=num_heads,
                block_size=block_size,
                halo_size=halo_size,
                backend=attn_backend,
            )
            return Bottleneck(
                in_chs,
                widths[stage],
                out_chs[stage],
                stride,
                spatial_out_chs=value_chs[stage],
                spatial_layer=attn,
                drop_path=drop_path,
            )

        super().__init__(make, (3, 3, l3, 3), out_chs, num_classes, final_chs=final_chs, **kwargs)
        self.block_size = block_size
        self.strict_size = strict_size
        for m in self.modules():  # ResNet's Kaiming init also visited the projections
            if isinstance(m, HaloAttention):
                m.reset_parameters()

    def check(self, x: Tensor) -> None:
        multiple = 32 * self.block_size if self.strict_size else 1
        self.check_input(x, multiple=multiple, channels=self.in_chans)


def _halo_layer(dim: int, dim_out: int, stride: int, **kwargs) -> HaloAttention:
    return HaloAttention(dim, dim_out, stride=stride, **kwargs)


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm ``ByobNet`` layout (``halonet_h*`` built from ``byoanet`` configs) -> ours.

    ``stem.conv1.{conv,bn}`` -> ``conv1``/``bn1``; ``stages.S.I`` -> ``layer{S+1}.I``;
    ``conv1_1x1.{conv,bn}`` -> ``conv1``/``bn1``; ``self_attn`` -> ``conv2``; ``post_attn`` -> ``bn2``;
    ``conv3_1x1.{conv,bn}`` -> ``conv3``/``bn3``; ``shortcut.conv.{conv,bn}`` -> ``downsample.{0,1}``;
    ``final_conv.{conv,bn}`` -> ``final_conv.{0,1}``. timm's ``halonet_h1`` matches H1 exactly; for
    ``r_v != 1`` timm widens q/k as well, so only H0-H4 have a timm counterpart.
    """
    if not any(k.startswith(("stages.", "stem.")) for k in state):
        return state  # already ours
    rules = [
        ("stem.conv1.conv.", "conv1."),
        ("stem.conv1.bn.", "bn1."),
        ("final_conv.conv.", "final_conv.0."),
        ("final_conv.bn.", "final_conv.1."),
    ]
    block_rules = [
        ("conv1_1x1.conv.", "conv1."),
        ("conv1_1x1.bn.", "bn1."),
        ("self_attn.", "conv2."),
        ("post_attn.", "bn2."),
        ("conv3_1x1.conv.", "conv3."),
        ("conv3_1x1.bn.", "bn3."),
        ("shortcut.conv.conv.", "downsample.0."),
        ("shortcut.conv.bn.", "downsample.1."),
    ]
    out = {}
    for key, value in state.items():
        for old, new in rules:
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        if key.startswith("stages."):
            _, stage, index, rest = key.split(".", 3)
            for old, new in block_rules:
                if rest.startswith(old):
                    rest = new + rest.removeprefix(old)
                    break
            key = f"layer{int(stage) + 1}.{index}.{rest}"
        out[key] = value
    return out


# (b, h, r_v, r_b, l3, d_f, paper input size, paper params, paper top-1), from the paper's model
# table. H6's parameter count is not in the issue and could not be checked against a copy of the
# paper here: 43.4M is the paper's figure as recalled (our exact count 43,456,792 follows the same
# rule that reproduces the seven others); the top-1 figures are likewise as recalled (H7 84.9 is
# the abstract's).
HALONET_CFGS = {
    "h0": (8, 3, 1.0, 0.5, 7, None, 256, 5.5e6, 77.9),
    "h1": (8, 3, 1.0, 1.0, 10, None, 256, 8.1e6, 79.9),
    "h2": (8, 3, 1.0, 1.25, 11, None, 256, 9.4e6, 80.4),
    "h3": (10, 3, 1.0, 1.5, 12, 1024, 320, 11.8e6, 81.9),
    "h4": (12, 2, 1.0, 3.0, 12, 1280, 384, 19.1e6, 83.0),
    "h5": (14, 2, 2.5, 2.0, 23, 1536, 448, 30.7e6, 84.0),
    "h6": (8, 4, 3.0, 2.75, 24, 1536, 512, 43.4e6, 84.4),
    "h7": (10, 3, 4.0, 3.5, 26, 2048, 600, 67.4e6, 84.9),
}
TEST_INPUT_SIZE = 32
SOURCE = "https://arxiv.org/abs/2103.12731 (no official code; timm layers/halo_attn.py for the layout)"


def _halonet(variant: str, num_classes: int, **kwargs) -> HaloNet:
    b, h, rv, rb, l3, df = HALONET_CFGS[variant][:6]
    return HaloNet(
        block_size=b,
        halo_size=h,
        value_ratio=rv,
        out_ratio=rb,
        l3=l3,
        final_chs=df,
        num_classes=num_classes,
        **kwargs,
    )


def _register(variant: str):
    cfg = HALONET_CFGS[variant]
    return register_model(
        paper_params=cfg[7],
        paper_top1=cfg[8],
        input_size=cfg[6],
        test_input_size=TEST_INPUT_SIZE,
        family="halonet",
        checkpoint_filter_fn=checkpoint_filter_fn,
        source=SOURCE,
    )


@_register("h0")
def halonet_h0(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H0 (Vaswani et al., CVPR 2021): b 8, h 3, r_v 1, r_b 0.5, l3 7; 256 px."""
    return _halonet("h0", num_classes, **kwargs)


@_register("h1")
def halonet_h1(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H1 (Vaswani et al., CVPR 2021): b 8, h 3, r_v 1, r_b 1, l3 10; 256 px."""
    return _halonet("h1", num_classes, **kwargs)


@_register("h2")
def halonet_h2(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H2 (Vaswani et al., CVPR 2021): b 8, h 3, r_v 1, r_b 1.25, l3 11; 256 px."""
    return _halonet("h2", num_classes, **kwargs)


@_register("h3")
def halonet_h3(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H3 (Vaswani et al., CVPR 2021): b 10, h 3, r_v 1, r_b 1.5, l3 12, d_f 1024; 320 px."""
    return _halonet("h3", num_classes, **kwargs)


@_register("h4")
def halonet_h4(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H4 (Vaswani et al., CVPR 2021): b 12, h 2, r_v 1, r_b 3, l3 12, d_f 1280; 384 px."""
    return _halonet("h4", num_classes, **kwargs)


@_register("h5")
def halonet_h5(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H5 (Vaswani et al., CVPR 2021): b 14, h 2, r_v 2.5, r_b 2, l3 23, d_f 1536; 448 px."""
    return _halonet("h5", num_classes, **kwargs)


@_register("h6")
def halonet_h6(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H6 (Vaswani et al., CVPR 2021): b 8, h 4, r_v 3, r_b 2.75, l3 24, d_f 1536; 512 px."""
    return _halonet("h6", num_classes, **kwargs)


@_register("h7")
def halonet_h7(num_classes: int = 1000, **kwargs) -> HaloNet:
    """HaloNet-H7 (Vaswani et al., CVPR 2021): b 10, h 3, r_v 4, r_b 3.5, l3 26, d_f 2048; 600 px."""
    return _halonet("h7", num_classes, **kwargs)
