"""DaViT (Ding et al., ECCV 2022): window attention against a per-window loop (and core's window_2d
mask), channel group attention against its equation, the block's residual structure, the released
parameter counts, input checks and the official checkpoint remap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interplay.core.attention import attend, masks
from interplay.core.errors import ConfigError
from interplay.vision.models.davit import (
    ChannelBlock,
    DaViT,
    SpatialBlock,
    WindowAttention,
    checkpoint_filter_fn,
    davit_base,
    davit_small,
    davit_tiny,
    window_partition,
    window_reverse,
)
from interplay.vision.models.factory import MODEL_CFGS, count_parameters, load_checkpoint


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (zero biases / unit norms would hide ordering mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _mhsa_reference(attn: WindowAttention, tokens: torch.Tensor) -> torch.Tensor:
    """Plain multi-head self-attention of one window ``[B, N, C]`` with explicit softmax."""
    b, n, c = tokens.shape
    h, d = attn.heads, attn.head_dim
    q, k, v = (tokens @ attn.qkv.weight.t() + attn.qkv.bias).split(c, dim=-1)
    outs = []
    for i in range(h):
        qi, ki, vi = (t[..., i * d : (i + 1) * d] for t in (q, k, v))
        a = torch.softmax(qi @ ki.transpose(-1, -2) / d**0.5, dim=-1)
        outs.append(a @ vi)
    return torch.cat(outs, dim=-1) @ attn.proj.weight.t() + attn.proj.bias


def test_window_attention_equals_a_per_window_loop():
    torch.manual_seed(0)
    attn = WindowAttention(24, heads=3)
    _randomise(attn)
    x = torch.randn(2, 14, 21, 24)  # 2 x 3 windows of 7 x 7
    got = window_reverse(attn(window_partition(x, 7)), 7, 14, 21)
    want = torch.empty_like(x)
    for r in range(0, 14, 7):
        for c in range(0, 21, 7):
            win = x[:, r : r + 7, c : c + 7].reshape(2, 49, 24)
            want[:, r : r + 7, c : c + 7] = _mhsa_reference(attn, win).reshape(2, 7, 7, 24)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_window_attention_matches_core_window_mask_on_the_full_grid():
    torch.manual_seed(1)
    b, heads, h, w, d = 2, 2, 14, 14, 8
    q, k, v = (torch.randn(b, heads, h * w, d) for _ in range(3))
    full = attend(q, k, v, mask=masks.window_2d((h, w), 7), backend="math")

    def part(t):  # [B, H, L, D] -> [B * nW, H, 49, D]
        t = t.transpose(1, 2).reshape(b, h, w, heads * d)
        return window_partition(t, 7).reshape(-1, 49, heads, d).transpose(1, 2)

    windowed = attend(part(q), part(k), part(v))
    back = window_reverse(windowed.transpose(1, 2).reshape(-1, 49, heads * d), 7, h, w)
    torch.testing.assert_close(back.reshape(b, h * w, heads, d).transpose(1, 2), full, rtol=1e-4, atol=1e-5)


def _cpe(block_cpe, x):
    return x + F.conv2d(x, block_cpe.proj.weight, block_cpe.proj.bias, padding=1, groups=x.shape[1])


def test_spatial_block_is_the_papers_residual_chain_with_padding():
    """x += DW3x3(x); x += WinAttn(LN x) (zero-padded windows, as released); x += DW3x3(x);
    x += MLP(LN x), on a 10 x 10 map (padded to 14 x 14 for the windows)."""
    torch.manual_seed(2)
    block = SpatialBlock(16, heads=2, window_size=7).eval()
    _randomise(block)
    x = torch.randn(2, 16, 10, 10)
    with torch.no_grad():
        got = block(x)
        y = _cpe(block.cpe1, x).permute(0, 2, 3, 1)
        z = F.pad(F.layer_norm(y, (16,), block.norm1.weight, block.norm1.bias), (0, 0, 0, 4, 0, 4))
        att = torch.empty_like(z)
        for r in (0, 7):
            for c in (0, 7):
                win = z[:, r : r + 7, c : c + 7].reshape(2, 49, 16)
                att[:, r : r + 7, c : c + 7] = _mhsa_reference(block.attn, win).reshape(2, 7, 7, 16)
        y = y + att[:, :10, :10]
        y = _cpe(block.cpe2, y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = y + block.mlp(F.layer_norm(y, (16,), block.norm2.weight, block.norm2.bias))
    torch.testing.assert_close(got, y.permute(0, 3, 1, 2), rtol=1e-4, atol=1e-5)


def test_channel_block_follows_the_channel_group_attention_equation():
    """Per group of C_g = C / heads channels: A = softmax((K C_g^-1/2)^T V) (C_g x C_g),
    out = (A Q^T)^T; qkv with bias; then proj, inside the residual chain."""
    torch.manual_seed(3)
    dim, heads, h, w = 24, 4, 5, 6
    cg = dim // heads
    block = ChannelBlock(dim, heads).eval()
    _randomise(block)
    assert block.attn.qkv.bias is not None
    x = torch.randn(2, dim, h, w)
    with torch.no_grad():
        got = block(x)
        y = _cpe(block.cpe1, x).flatten(2).transpose(1, 2)  # [B, N, C]
        t = F.layer_norm(y, (dim,), block.norm1.weight, block.norm1.bias)
        q, k, v = (t @ block.attn.qkv.weight.t() + block.attn.qkv.bias).split(dim, dim=-1)
        out = torch.empty_like(t)
        for bi in range(2):
            for g in range(heads):
                sl = slice(g * cg, (g + 1) * cg)
                qg, kg, vg = q[bi, :, sl], k[bi, :, sl], v[bi, :, sl]  # [N, C_g]
                a = torch.softmax((kg * cg**-0.5).t() @ vg, dim=-1)  # [C_g, C_g]
                out[bi, :, sl] = (a @ qg.t()).t()
        y = y + out @ block.attn.proj.weight.t() + block.attn.proj.bias
        y = _cpe(block.cpe2, y.transpose(1, 2).reshape(2, dim, h, w)).flatten(2).transpose(1, 2)
        y = y + block.mlp(F.layer_norm(y, (dim,), block.norm2.weight, block.norm2.bias))
    torch.testing.assert_close(got, y.transpose(1, 2).reshape(2, dim, h, w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("factory", "count"), [(davit_tiny, 28_360_168), (davit_small, 49_745_896), (davit_base, 87_954_408)]
)
def test_parameter_counts_equal_the_released_models(factory, count):
    with torch.device("meta"):
        model = factory()
    assert count_parameters(model) == count  # the counts printed in dingmyu/davit's model file


def test_architecture_details():
    model = DaViT((16, 32, 64, 128), (1, 1, 2, 1), (1, 2, 4, 8), num_classes=5)
    assert (model.stem.conv.kernel_size, model.stem.conv.stride, model.stem.conv.padding) == (
        (7, 7),
        (4, 4),
        (3, 3),
    )
    ds = model.stages[1].downsample
    assert ds.norm.normalized_shape == (16,) and (ds.conv.kernel_size, ds.conv.stride) == ((2, 2), (2, 2))
    block = model.stages[2].blocks[1]
    assert isinstance(block[0], SpatialBlock) and isinstance(block[1], ChannelBlock)
    assert block[0].mlp.fc1.out_features == 4 * 64
    assert [f.reduction for f in model.feature_info] == [4, 8, 16, 32]


def test_wrong_inputs_are_config_errors_naming_the_model():
    model = DaViT((16, 32, 64, 128), (1, 1, 1, 1), (1, 2, 4, 8), num_classes=5)
    model.pretrained_cfg = {"name": "davit_tiny"}
    with pytest.raises(ConfigError, match="davit_tiny"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="davit_tiny.*divisible by 32"):
        model(torch.randn(1, 3, 48, 64))


def _to_official(key: str) -> str:
    """Our (timm) key -> the key in dingmyu/davit's released checkpoints."""
    import re

    key = re.sub(r"^stem\.conv", "patch_embeds.0.proj", key)
    key = re.sub(r"^stem\.norm", "patch_embeds.0.norm", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.conv", r"patch_embeds.\1.proj", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.norm", r"patch_embeds.\1.norm", key)
    key = re.sub(r"^stages\.(\d+)\.blocks\.", r"main_blocks.\1.", key)
    key = key.replace(".cpe1.", ".cpe.0.").replace(".cpe2.", ".cpe.1.")
    key = re.sub(r"^head\.norm\.", "norms.", key)
    return re.sub(r"^head\.fc\.", "head.", key)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_official_checkpoint_remap(tmp_path, suffix):
    assert MODEL_CFGS["davit_tiny"]["checkpoint_filter_fn"] is checkpoint_filter_fn
    torch.manual_seed(4)
    src = DaViT((16, 32, 64, 128), (1, 1, 2, 1), (1, 2, 4, 8), num_classes=5).eval()
    _randomise(src, seed=5)
    official = {_to_official(k): v.clone() for k, v in src.state_dict().items()}
    for key in (
        "patch_embeds.0.proj.weight",
        "patch_embeds.2.norm.bias",
        "main_blocks.2.1.0.cpe.1.proj.weight",
        "main_blocks.2.1.1.attn.qkv.bias",
        "norms.weight",
        "head.weight",
    ):
        assert key in official
    path = tmp_path / f"davit{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": official}, path)
    else:
        from safetensors.torch import save_file

        save_file(official, str(path))
    dst = DaViT((16, 32, 64, 128), (1, 1, 2, 1), (1, 2, 4, 8), num_classes=5).eval()
    load_checkpoint(dst, path, filter_fn=checkpoint_filter_fn, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    # a checkpoint already in our (timm) layout passes unchanged
    assert checkpoint_filter_fn(src.state_dict(), dst).keys() == src.state_dict().keys()
