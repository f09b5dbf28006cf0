"""Plain Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Eq. (1)-(4) of the paper: ``z0 = [x_cls; x_p E] + E_pos``; per block ``z' = z + MSA(LN z)``,
``z = z' + MLP(LN z')``; ``y = LN(z_L^0)``. Pre-norm blocks, LayerNorm eps 1e-6, GELU MLP of ratio 4,
qkv bias, a class token and learned absolute position embeddings (timm's ``VisionTransformer``).

Parameter names follow timm's layout (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``) except the classifier,
which is our :class:`ClassifierHead` (``head.fc``); :func:`checkpoint_filter_fn` maps timm / DeiT
and Hugging Face ``transformers`` checkpoints onto it and resamples ``pos_embed`` bicubically when
the checkpoint's grid differs from the model's.

The module is meant to be reused (visual prompting, attention rollout, IQA heads), so besides the
backbone contract it offers:

- ``forward_features(x)`` -> normalised tokens ``[B, 1 + N (+ P), C]`` (class token first; the head
  pools ``"token"``);
- ``forward_intermediates(x, indices)`` -> the chosen blocks' *patch* tokens as ``[B, C, H/p, W/p]``
  maps (no final norm); ``feature_info`` has one entry per block, ``reduction = patch_size``;
- ``get_attention_maps(x)`` -> per block the exact attention probabilities ``[B, heads, L, L]``
  (``softmax(q k^T / sqrt(d))`` with the same mask, computed in float32; ``L = 1 + N (+ P)``);
- prompt hooks on ``forward_features`` / ``forward_intermediates`` / ``get_attention_maps``:
  ``extra_tokens`` (``[B|1, P, C]`` appended after the patch tokens before block 0, VPT-shallow; or a
  list with one entry per block: before block ``i`` the previous prompts are dropped and
  ``extra_tokens[i]`` appended, VPT-deep; ``None`` entries keep the current tokens) and ``attn_mask``
  (boolean, ``True`` = may attend, broadcastable to ``[B, heads, L, L]``; one tensor for every block
  or a list per block). Blocks also take ``attn_mask`` and ``return_attention`` directly, and
  :meth:`VisionTransformer.prepare_tokens` gives ``z0`` for callers that run the blocks themselves.

Inputs of another size than ``img_size`` are accepted (``dynamic_img_size=True``, the default): the
position embedding is resampled bicubically to the input's grid on the fly; the height and width
must be multiples of the patch size (else a ConfigError names the model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from interplay.core.attention import attend
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import Mlp

PAPER = "Dosovitskiy et al., ICLR 2021"


def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> Tensor:
    """Resample ``[1, prefix + h*w, C]`` absolute position embeddings to ``new_grid`` (bicubic,
    antialiased when shrinking, as timm); the prefix (class token) rows are kept as they are."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n = grid.shape[1]
    old = math.isqrt(n)
    if old * old != n:
        raise ConfigError(f"pos_embed has {n} grid tokens, which is not a square grid")
    if (old, old) == tuple(new_grid):
        return pos_embed
    c = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.reshape(1, old, old, c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(dtype)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches -> linear embedding (a stride-``p`` convolution)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT / DeiT-III); only built when ``init_values`` is set."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def attention_probs(q: Tensor, k: Tensor, scale: float, mask: Tensor | None = None) -> Tensor:
    """Exact ``softmax(q k^T * scale)`` in float32 ``[B, H, Lq, Lk]``; masked keys get 0 and a row
    with no visible key is all zeros (as :func:`interplay.core.attention.attend` returns for it)."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if mask is None:
        return scores.softmax(dim=-1)
    visible = mask.expand_as(scores)
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = scores.softmax(dim=-1)
    return probs.nan_to_num(0.0)  # rows with no visible key


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm names); the product runs
    through :func:`interplay.core.attention.attend`."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        probs = None
        if return_attention:
            # the probabilities themselves are wanted: compute them once and apply them exactly
            probs = attention_probs(q, k, self.scale, attn_mask)
            out = (probs @ v.float()).to(v.dtype)
        else:
            out = attend(
                q, k, v, mask=attn_mask, scale=self.scale, dropout_p=self.attn_drop if self.training else 0.0
            )
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))
        return (out, probs) if return_attention else out


class Block(nn.Module):
    """Pre-norm transformer block: ``x += MSA(LN x)``; ``x += MLP(LN x)`` (paper eq. 2-3)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        if return_attention:
            y, probs = self.attn(self.norm1(x), attn_mask, return_attention=True)
        else:
            y, probs = self.attn(self.norm1(x), attn_mask), None
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, probs) if return_attention else x


PerBlock = Tensor | Sequence[Tensor | None] | None


class VisionTransformer(VisionBackbone):
    """ViT with a class token (see the module docstring for the outputs and the prompt hooks)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dynamic_img_size: bool = True,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if global_pool not in ("token", "mean"):
            raise ConfigError(f"ViT global_pool must be 'token' or 'mean', got '{global_pool}'")
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.img_size = img_size
        self.dynamic_img_size = dynamic_img_size
        self.num_prefix_tokens = 1
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        # plain Python: torch.linspace(...).tolist() fails under torch.device('meta')
        rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values, proj_drop_rate, attn_drop_rate, r)
            for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = ClassifierHead(embed_dim, num_classes, pool=global_pool, drop_rate=drop_rate)
        self.feature_info = [FeatureInfo(embed_dim, patch_size, f"blocks.{i}") for i in range(depth)]
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed.device.type == "meta":
            return
        # timm draws trunc_normal_(std=0.02) with bounds +-2 (absolute, i.e. 100 std): the same
        # distribution as normal_(std=0.02) in practice, which is an order of magnitude faster to draw
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay (timm / DeiT)."""
        return {"pos_embed", "cls_token"}

    # -- tokens ------------------------------------------------------------------------------------
    def prepare_tokens(self, x: Tensor) -> Tensor:
        """``z0 = [cls; patches E] + E_pos`` ``[B, 1 + N, C]`` (position embedding resampled to the
        input's grid when it differs from ``img_size``)."""
        self.check_input(x, multiple=self.patch_size, channels=self.in_chans)
        tokens, grid = self.patch_embed(x)
        pos = self.pos_embed
        if pos.shape[1] != 1 + grid[0] * grid[1] or grid[0] != grid[1]:
            if not self.dynamic_img_size:
                name = getattr(self, "pretrained_cfg", {}).get("name", type(self).__name__)
                raise ConfigError(
                    f"{name} was built for {self.img_size}x{self.img_size} inputs, got {tuple(x.shape[-2:])} "
                    "(pass dynamic_img_size=True to resample the position embedding)"
                )
            pos = resample_pos_embed(pos, grid, self.num_prefix_tokens)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + pos
        return self.pos_drop(tokens)

    @staticmethod
    def _per_block(value: PerBlock, i: int, depth: int, what: str):
        if value is None or isinstance(value, Tensor):
            return value
        if len(value) != depth:
            raise ConfigError(f"{what} has {len(value)} entries, the ViT has {depth} blocks")
        return value[i]

    def _run_blocks(
        self,
        x: Tensor,
        *,
        last: int,
        extra_tokens: PerBlock = None,
        attn_mask: PerBlock = None,
        return_attention: bool = False,
        keep: set[int] | None = None,
    ) -> tuple[Tensor, dict[int, Tensor], list[Tensor]]:
        """Run blocks ``0..last``; returns the tokens after ``last``, the outputs of the blocks in
        ``keep`` and (with ``return_attention``) the per-block attention probabilities."""
        depth = len(self.blocks)
        n_base = x.shape[1]  # class token + patches
        kept: dict[int, Tensor] = {}
        maps: list[Tensor] = []
        deep = extra_tokens is not None and not isinstance(extra_tokens, Tensor)
        if extra_tokens is not None and not deep:
            x = torch.cat([x, extra_tokens.expand(x.shape[0], -1, -1)], dim=1)
        elif deep and len(extra_tokens) != depth:
            raise ConfigError(f"extra_tokens has {len(extra_tokens)} entries, the ViT has {depth} blocks")
        use_ckpt = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        for i, block in enumerate(self.blocks[: last + 1]):
            if deep and extra_tokens[i] is not None:
                x = torch.cat([x[:, :n_base], extra_tokens[i].expand(x.shape[0], -1, -1)], dim=1)
            mask = self._per_block(attn_mask, i, depth, "attn_mask")
            if return_attention:
                x, probs = block(x, mask, True)
                maps.append(probs)
            elif use_ckpt:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
            if keep is not None and i in keep:
                kept[i] = x
        return x, kept, maps

    def forward_features(
        self, x: Tensor, *, extra_tokens: PerBlock = None, attn_mask: PerBlock = None
    ) -> Tensor:
        """Normalised tokens ``[B, 1 + N (+ P), C]`` after the last block (class token first)."""
        x = self.prepare_tokens(x)
        x, _, _ = self._run_blocks(
            x, last=len(self.blocks) - 1, extra_tokens=extra_tokens, attn_mask=attn_mask
        )
        return self.norm(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: Sequence[int] | None = None,
        *,
        norm: bool = False,
        extra_tokens: PerBlock = None,
        attn_mask: PerBlock = None,
    ) -> list[Tensor]:
        """Patch tokens of the blocks ``indices`` (default: every block) as ``[B, C, H/p, W/p]`` maps;
        ``norm=True`` applies the final LayerNorm to each. Blocks after the last index are skipped."""
        depth = len(self.blocks)
        idx = list(range(depth)) if indices is None else [i % depth for i in indices]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.prepare_tokens(x)
        _, kept, _ = self._run_blocks(
            tokens, last=max(idx), extra_tokens=extra_tokens, attn_mask=attn_mask, keep=set(idx)
        )
        outs = []
        for i in idx:
            t = self.norm(kept[i]) if norm else kept[i]
            patches = t[:, self.num_prefix_tokens : self.num_prefix_tokens + h * w]
            outs.append(patches.transpose(1, 2).reshape(t.shape[0], self.embed_dim, h, w))
        return outs

    @torch.no_grad()
    def get_attention_maps(
        self, x: Tensor, *, extra_tokens: PerBlock = None, attn_mask: PerBlock = None
    ) -> list[Tensor]:
        """Per block, the attention probabilities ``[B, heads, L, L]`` (float32, rows sum to one),
        computed exactly in the current mode (call ``eval()`` first for dropout-free maps), without
        gradients; for differentiable maps call the blocks with ``return_attention=True``."""
        tokens = self.prepare_tokens(x)
        _, _, maps = self._run_blocks(
            tokens,
            last=len(self.blocks) - 1,
            extra_tokens=extra_tokens,
            attn_mask=attn_mask,
            return_attention=True,
        )
        return maps


# -- checkpoints ---------------------------------------------------------------------------------------
def _from_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face ``ViTModel`` / ``ViTForImageClassification`` names -> ours (q, k, v fused)."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
        "classifier.weight": "head.fc.weight",
        "classifier.bias": "head.fc.bias",
    }
    layer = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.output.dense": "attn.proj",
        "intermediate.dense": "mlp.fc1",
        "output.dense": "mlp.fc2",
    }
    for key, value in state.items():
        k = key.removeprefix("vit.")
        if k.startswith("pooler."):
            continue  # ViTModel's pooler is not part of the classifier
        if k in simple:
            out[simple[k]] = value
            continue
        if not k.startswith("encoder.layer."):
            out[k] = value  # unknown: left for load_checkpoint to report
            continue
        i, rest = k.removeprefix("encoder.layer.").split(".", 1)
        module, param = rest.rsplit(".", 1)
        if module.startswith("attention.attention."):
            qkv.setdefault((int(i), param), {})[module.rsplit(".", 1)[1]] = value
        elif module in layer:
            out[f"blocks.{i}.{layer[module]}.{param}"] = value
        else:
            out[k] = value
    for (i, param), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def checkpoint_filter_fn(state: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """timm / DeiT / Hugging Face checkpoints -> our names: ``head.{weight,bias}`` -> ``head.fc.*``,
    transformers' separate ``query``/``key``/``value`` fused into ``attn.qkv``; ``pos_embed`` resampled
    (bicubic) to the model's grid; identity modules' empty keys (``fc_norm``) dropped."""
    if any(k.startswith(("vit.", "embeddings.", "encoder.layer.")) for k in state):
        state = _from_transformers(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in ("head.weight", "head.bias"):
            key = "head.fc." + key.split(".")[1]
        elif key.startswith(("fc_norm.", "norm_pre.")) and not hasattr(model, key.split(".")[0]):
            continue
        if key == "pos_embed" and value.shape != model.pos_embed.shape:
            grid = model.img_size // model.patch_size
            value = resample_pos_embed(value, (grid, grid), model.num_prefix_tokens)
        out[key] = value
    return out


# -- registered variants -----------------------------------------------------------------------------
def _vit(num_classes: int, defaults: dict, kwargs: dict) -> VisionTransformer:
    return VisionTransformer(num_classes=num_classes, **{**defaults, **kwargs})


_VIT_SOURCE = "https://github.com/google-research/vision_transformer ; timm vision_transformer.py"


@register_model(
    paper_params=5_717_416,
    paper_gmacs=1.3,
    paper_top1=72.2,
    input_size=224,
    test_input_size=32,
    family="vit",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_VIT_SOURCE,
)
def vit_tiny_patch16_224(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-Ti/16 (Dosovitskiy et al., ICLR 2021; DeiT-Ti of Touvron et al., ICML 2021): 192 wide, 3 heads.

    Top-1: DeiT-Ti, ImageNet-1k only (DeiT Table 1); 1.3 GMACs as later papers tabulate DeiT-Ti (PVT, T2T).
    """
    return _vit(num_classes, dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), kwargs)


@register_model(
    paper_params=22_050_664,
    paper_gmacs=4.6,
    paper_top1=79.8,
    input_size=224,
    test_input_size=32,
    family="vit",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_VIT_SOURCE,
)
def vit_small_patch16_224(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-S/16 (Dosovitskiy et al., ICLR 2021; DeiT-S of Touvron et al., ICML 2021): 384 wide, 6 heads.

    Top-1: DeiT-S, ImageNet-1k only (DeiT Table 1); GMACs as Swin (Liu et al., ICCV 2021) Table 1 lists them.
    """
    return _vit(num_classes, dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), kwargs)


@register_model(
    paper_params=86_567_656,
    paper_gmacs=17.5,
    paper_top1=81.8,
    input_size=224,
    test_input_size=32,
    family="vit",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_VIT_SOURCE,
)
def vit_base_patch16_224(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-B/16 (Dosovitskiy et al., ICLR 2021): 768 wide, 12 blocks, 12 heads, 16x16 patches.

    Top-1: DeiT-B, ImageNet-1k only (DeiT Table 1); GMACs as Swin (Liu et al., ICCV 2021) Table 1 lists them.
    """
    return _vit(num_classes, dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), kwargs)


@register_model(
    paper_params=86_576_872,
    paper_gmacs=None,
    paper_top1=None,
    input_size=224,
    test_input_size=16,
    family="vit",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_VIT_SOURCE,
)
def vit_base_patch8_224(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-B/8 (Dosovitskiy et al., ICLR 2021; weights of Steiner et al., TMLR 2022): 8x8 patches.

    MANIQA's backbone. No ImageNet-1k-only figure exists for it (top-1 and GMACs left blank).
    """
    return _vit(num_classes, dict(patch_size=8, embed_dim=768, depth=12, num_heads=12), kwargs)


@register_model(input_size=32, test_input_size=32, family="vit", checkpoint_filter_fn=checkpoint_filter_fn)
def vit_pico_patch4_32(num_classes: int = 1000, **kwargs) -> VisionTransformer:
    """ViT-pico/4 (Dosovitskiy et al., ICLR 2021 architecture, our size for demos): 32 px, 64 wide, 4 blocks.

    4 heads, MLP ratio 2; no paper figures.
    """
    return _vit(
        num_classes,
        dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        kwargs,
    )
