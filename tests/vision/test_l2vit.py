"""L2ViT: the enhanced linear attention against its quadratic form, window attention against a
per-window loop (with the released zero padding), the block pattern, input checks and the
official checkpoint layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interplay.core.attention.linear import l2vit_linear_attention
from interplay.core.errors import ConfigError
from interplay.vision.models import MODEL_CFGS, load_checkpoint
from interplay.vision.models.l2vit import (
    L2ViT,
    LGABlock,
    LinearAttention,
    LWABlock,
    WindowAttention,
)

F64 = torch.float64


def quadratic_linear_attention(q, k, v, temperature, denominator_min=100.0):
    """The same attention with the explicit N x N matrix A = relu(q) relu(k)^T."""
    a = F.relu(q) @ F.relu(k).transpose(-2, -1)  # [B, H, N, N]
    return temperature * (a @ v) / a.sum(dim=-1, keepdim=True).clamp(min=denominator_min)


@pytest.mark.parametrize("n, d, dv, gain", [(1, 8, 8, 1.0), (63, 60, 12, 1.0), (50, 16, 16, 6.0)])
def test_linear_attention_equals_quadratic_form(n, d, dv, gain):
    g = torch.Generator().manual_seed(n)
    q = (gain * torch.randn(2, 3, n, d, generator=g, dtype=F64)).requires_grad_()
    k = (gain * torch.randn(2, 3, n, d, generator=g, dtype=F64)).requires_grad_()
    v = torch.randn(2, 3, n, dv, generator=g, dtype=F64, requires_grad=True)
    temperature = torch.rand(3, 1, 1, generator=g, dtype=F64).add(0.1).requires_grad_()
    out = l2vit_linear_attention(q, k, v, temperature)
    ref = quadratic_linear_attention(q, k, v, temperature)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v, temperature))
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v, temperature))
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want)


def test_denominator_clamp_is_active_for_small_and_inactive_for_large_scores():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, 1, 10, 4, generator=g, dtype=F64) for _ in range(3))
    a = q @ k.transpose(-2, -1)
    assert (a.sum(-1) < 100).all()  # clamped: the output is A v / 100
    torch.testing.assert_close(l2vit_linear_attention(q, k, v, 1.0), (a @ v) / 100)
    q, k = 20 * q, 20 * k
    a = q @ k.transpose(-2, -1)
    assert (a.sum(-1) > 100).all()  # not clamped: the row-normalised form
    torch.testing.assert_close(l2vit_linear_attention(q, k, v, 1.0), (a @ v) / a.sum(-1, keepdim=True))


def test_linear_attention_module_heads_and_temperature():
    torch.manual_seed(0)
    attn = LinearAttention(24, heads=3).double()
    assert attn.temperature.shape == (3, 1, 1)
    torch.testing.assert_close(attn.temperature, torch.full((3, 1, 1), 8**-0.5, dtype=F64))
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.5, 1.0, 2.0], dtype=F64).view(3, 1, 1))
    x = 3 * torch.randn(2, 17, 24, dtype=F64)
    q, k, v = attn.qkv(x).view(2, 17, 3, 3, 8).permute(2, 0, 3, 1, 4)
    heads = [quadratic_linear_attention(q[:, h], k[:, h], v[:, h], attn.temperature[h]) for h in range(3)]
    ref = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), ref)


def _window_loop(attn: WindowAttention, x: torch.Tensor, window: int) -> torch.Tensor:
    """Softmax attention window by window on ``[B, H, W, C]`` (sides multiples of the window)."""
    b, h, w, c = x.shape
    out = torch.zeros_like(x)
    heads, hd = attn.heads, attn.head_dim
    for i in range(0, h, window):
        for j in range(0, w, window):
            tokens = x[:, i : i + window, j : j + window].reshape(b, -1, c)
            q, k, v = attn.qkv(tokens).view(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
            p = torch.softmax(q @ k.transpose(-2, -1) / hd**0.5, dim=-1)
            y = attn.proj((p @ v).transpose(1, 2).reshape(b, -1, c))
            out[:, i : i + window, j : j + window] = y.view(b, window, window, c)
    return out


@pytest.mark.parametrize("side", [14, 9])
def test_lwa_block_equals_window_loop_with_released_padding(side):
    torch.manual_seed(1)
    block = LWABlock(16, heads=2, window_size=7).double().eval()
    x = torch.randn(2, side, side, 16, dtype=F64)
    shortcut = block.cpe[0](x)
    padded = F.pad(block.norm1(shortcut), (0, 0, 0, (-side) % 7, 0, (-side) % 7))  # zeros join unmasked
    attn = _window_loop(block.attn, padded, 7)[:, :side, :side]
    y = block.cpe[1](shortcut + attn)
    ref = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(block(x), ref)


def test_lga_block_equation_and_lcm():
    torch.manual_seed(2)
    block = LGABlock(12, heads=3).double().eval()
    assert block.local_mp.conv1.kernel_size == (7, 7) and block.local_mp.conv1.groups == 12
    assert block.local_mp.conv2.kernel_size == (7, 7) and block.local_mp.conv2.groups == 12
    x = torch.randn(2, 5, 6, 12, dtype=F64)
    y = x + F.conv2d(
        x.permute(0, 3, 1, 2), block.cpe[0].proj.weight, block.cpe[0].proj.bias, padding=1, groups=12
    ).permute(0, 2, 3, 1)
    y = y + block.attn(block.norm1(y).reshape(2, 30, 12)).view(2, 5, 6, 12)
    lcm = block.local_mp
    z = block.norm3(y).permute(0, 3, 1, 2)
    z = lcm.conv2(lcm.bn(F.gelu(lcm.conv1(z)))).permute(0, 2, 3, 1)
    y = y + z
    ref = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(block(x), ref)


def _tiny(**kw) -> L2ViT:
    return L2ViT((16, 32, 48, 64), (2, 2, 3, 2), (1, 2, 3, 4), num_classes=5, **kw)


def test_blocks_alternate_local_and_global():
    model = _tiny()
    for stage in model.stages:
        kinds = [type(b) for b in stage]
        assert kinds == [LWABlock if j % 2 == 0 else LGABlock for j in range(len(stage))]


def test_input_checks_name_the_model():
    model = _tiny().eval()
    with pytest.raises(ConfigError, match="L2ViT"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 48))


def test_official_checkpoint_layout_loads(tmp_path):
    torch.manual_seed(3)
    model = _tiny().double().eval()
    ours = model.state_dict()
    # names of the released classification/models/l2vit.py
    for key in (
        "downsample_layers.0.proj.proj.0.weight",
        "downsample_layers.0.proj.proj.4.running_var",
        "downsample_layers.0.norm.weight",
        "downsample_layers.1.norm.weight",
        "downsample_layers.1.proj.weight",
        "stages.0.0.cpe.1.proj.weight",
        "stages.0.0.attn.qkv.weight",
        "stages.0.1.attn.temperature",
        "stages.0.1.local_mp.conv1.weight",
        "stages.0.1.local_mp.bn.running_mean",
        "stages.0.1.norm3.weight",
        "norm.weight",
    ):
        assert key in ours, key
    official = {
        ("head." + k[len("head.fc.") :] if k.startswith("head.fc.") else k): v.clone()
        for k, v in ours.items()
    }
    assert "head.weight" in official and "head.fc.weight" not in official
    path = tmp_path / "l2vit_official.pth"
    torch.save({"model": official}, path)
    fresh = _tiny().double().eval()
    load_checkpoint(fresh, path, filter_fn=MODEL_CFGS["l2vit_tiny"]["checkpoint_filter_fn"])
    x = torch.randn(1, 3, 64, 64, dtype=F64)
    torch.testing.assert_close(fresh(x), model(x))
