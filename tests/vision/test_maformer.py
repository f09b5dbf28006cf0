"""MAFormer (our reading, no public code): window attention with Swin's relative bias against a
per-window loop (padded keys masked), GLD as a token-axis FC plus positions and its behaviour at
other grids, the MAF block against its equations, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interplay.core.attention import relative_position_index_2d
from interplay.core.errors import ConfigError
from interplay.vision.models.maformer import GLD, LocalWindowAttention, MAFBlock, MAFormer

F64 = torch.float64


def _window_loop(attn: LocalWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Per-window softmax(q k^T / sqrt(d) + B) v over the real tokens of each window (no padding)."""
    b, h, w, c = x.shape
    ws, heads, hd = attn.window_size, attn.heads, attn.head_dim
    table = attn.rel_pos.relative_position_bias_table  # [(2ws-1)^2, heads]
    out = torch.zeros_like(x)
    for i in range(0, h, ws):
        for j in range(0, w, ws):
            win = x[:, i : i + ws, j : j + ws]
            wh, ww = win.shape[1:3]
            tokens = win.reshape(b, -1, c)
            q, k, v = attn.qkv(tokens).view(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
            # bias of the full window restricted to the tokens that exist
            rows = torch.arange(ws * ws).view(ws, ws)[:wh, :ww].reshape(-1)
            bias = table[relative_position_index_2d(ws, ws)[rows][:, rows]].permute(2, 0, 1)
            p = torch.softmax(q @ k.transpose(-2, -1) / hd**0.5 + bias, dim=-1)
            y = attn.proj((p @ v).transpose(1, 2).reshape(b, -1, c))
            out[:, i : i + wh, j : j + ww] = y.view(b, wh, ww, c)
    return out


@pytest.mark.parametrize("side", [14, 10])
def test_window_attention_equals_loop_and_masks_padding(side):
    torch.manual_seed(0)
    attn = LocalWindowAttention(16, heads=2, window_size=7).double()
    with torch.no_grad():
        attn.rel_pos.relative_position_bias_table.normal_()
    x = torch.randn(2, side, side, 16, dtype=F64)
    torch.testing.assert_close(attn(x), _window_loop(attn, x))


def test_gld_is_a_token_axis_fc_plus_positions():
    torch.manual_seed(1)
    gld = GLD(6, (4, 4), ratio=0.5).double()
    assert gld.num_global == 8 and gld.fc.weight.shape == (8, 16)
    x = torch.randn(2, 4, 4, 6, dtype=F64)
    tokens = x.reshape(2, 16, 6)  # [B, M, C]
    ref = torch.einsum("gm,bmc->bgc", gld.fc.weight, tokens) + gld.fc.bias[None, :, None] + gld.pos_embed
    torch.testing.assert_close(gld(x), ref)
    # other grids: same number of global tokens, and a constant map gives the same tokens
    const = torch.ones(1, 4, 4, 6, dtype=F64) * torch.randn(6, dtype=F64)
    for h, w in [(2, 2), (8, 6)]:
        out = gld(const[:, :1, :1].expand(1, h, w, 6))
        assert out.shape == (1, 8, 6)
        torch.testing.assert_close(out, gld(const))


def test_maf_block_equations():
    torch.manual_seed(2)
    block = MAFBlock(12, 3, (7, 7), window_size=7, mlp_ratio=2.0).double().eval()
    x = torch.randn(2, 7, 7, 12, dtype=F64)
    local = x + block.attn(block.norm1(x))
    local = local + block.mlp(block.norm2(local))
    glob = block.norm_kv(block.gld(block.norm_global(x)))  # [B, 24 or 25, C]
    assert glob.shape == (2, round(49 * 0.5), 12)
    f = block.fusion
    q = F.linear(block.norm_q(local.reshape(2, 49, 12)), f.q_proj.weight, f.q_proj.bias).view(2, 49, 3, 4)
    k, v = F.linear(glob, f.kv_proj.weight, f.kv_proj.bias).view(2, -1, 2, 3, 4).unbind(2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    fused = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(2, 49, 12)
    ref = local.reshape(2, 49, 12) + f.out_proj(fused)
    torch.testing.assert_close(block(x), ref.view(2, 7, 7, 12))


def test_model_stages_and_input_checks():
    model = MAFormer((8, 16, 24, 32), (1, 1, 2, 1), (1, 2, 3, 4), num_classes=3, img_size=64).eval()
    assert [b.gld.grid for s in model.stages for b in s] == [(16, 16), (8, 8), (4, 4), (4, 4), (2, 2)]
    x = torch.randn(1, 3, 32, 32)
    maps = model.forward_intermediates(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 8, 8), (16, 4, 4), (24, 2, 2), (32, 1, 1)]
    assert model(x).shape == (1, 3)
    with pytest.raises(ConfigError, match="MAFormer"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 40))
    with pytest.raises(ConfigError, match="img_size"):
        MAFormer(img_size=100)
