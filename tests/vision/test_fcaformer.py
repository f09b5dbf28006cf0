"""FcaFormer: forward cross attention against the released formula (LeViT offsets numbered in order of
first appearance, cross tokens scaled, normalised and biased), the chain of cross tokens through a
stage (with the 12-block window), bias tables at other resolutions, input checks and the official
checkpoint layout."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from interplay.core.errors import ConfigError
from interplay.vision.models import MODEL_CFGS, load_checkpoint
from interplay.vision.models.fcaformer import FcaBlock, FcaFormer, FcaLayer

F64 = torch.float64


def released_bias_index(h: int, w: int) -> torch.Tensor:
    """The released code's ``attention_bias_idxs``: offsets numbered in order of first appearance."""
    points = list(itertools.product(range(h), range(w)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            offsets.setdefault(off, len(offsets))
            idxs.append(offsets[off])
    return torch.tensor(idxs).view(h * w, h * w)


def released_block(block: FcaBlock, x: torch.Tensor, hw, s=None):
    """The released FcaBlock.forward, written out (the cross tokens' queries computed and dropped)."""
    b, n, c = x.shape
    heads, hd = block.heads, block.head_dim
    res = x
    idx = released_bias_index(*hw)
    q, k, v = block.qkv(block.norm1(x)).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    attn = (q * hd**-0.5) @ k.transpose(-2, -1) + block.attention_biases[:, idx]
    if block.n_cross > 0:
        s = block.s_norm(s * block.s_scale_factors)
        _, ks, vs = block.qkv(s).reshape(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        attn_s = (q * hd**-0.5) @ ks.transpose(-2, -1) + block.s_token_bias
        attn, v = torch.cat((attn, attn_s), dim=-1), torch.cat((v, vs), dim=-2)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    x = res + block.gamma_1 * block.proj(out)
    x = x.transpose(1, 2).reshape(b, c, *hw)
    s_new = block.dw_conv(x).flatten(2).transpose(1, 2) if block.emit else None
    x = block.local_conv(x).flatten(2).transpose(1, 2)
    x = x + block.gamma_2 * block.mlp.fc2(F.gelu(block.mlp.fc1(block.mlp.norm(block.norm2(x)))))
    return x, s_new


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.3 if "weight" in name else 0.5))
        for name, buf in module.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype) * 0.1)


def test_core_levit_index_equals_the_released_numbering():
    from interplay.core.attention.bias import levit_attention_bias_index

    for h, w in [(7, 7), (4, 6), (1, 3)]:
        index, num = levit_attention_bias_index((h, w))
        assert num == h * w
        torch.testing.assert_close(index, released_bias_index(h, w))


@pytest.mark.parametrize("inner_depth", [0, 3])
def test_fca_block_equals_the_released_formula(inner_depth):
    hw = (8, 8)
    block = FcaBlock(24, 3, hw, inner_depth=inner_depth, max_cross=12, emit=True).double().eval()
    _randomise(block, inner_depth)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 24, generator=g, dtype=F64)
    s = torch.randn(2, inner_depth * 4, 24, generator=g, dtype=F64) if inner_depth else None
    got, s_got = block(x, hw, s)
    want, s_want = released_block(block, x, hw, s)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(s_got, s_want)
    assert s_got.shape == (2, 4, 24)  # one cross token per 4 x 4 patch: ceil(8/4)^2


def test_stage_carries_the_last_cross_tokens_forward():
    hw, depth, max_cross = (8, 8), 5, 2
    layer = (
        FcaLayer(16, None, depth, 2, hw, [0.0] * depth, max_cross=max_cross, mlp_ratio=2.0).double().eval()
    )
    _randomise(layer, 1)
    assert [b.n_cross for b in layer.blocks] == [0, 1, 2, 2, 2]
    assert [b.emit for b in layer.blocks] == [True] * (depth - 1) + [False]
    assert layer.blocks[3].s_token_bias.shape == (1, 2, 1, 2 * 4)
    x = torch.randn(2, 16, *hw, dtype=F64)
    tokens, cross = x.flatten(2).transpose(1, 2), []
    for i, block in enumerate(layer.blocks):
        s = torch.cat(cross[-max_cross:], dim=1) if i else None
        tokens, s_new = released_block(block, tokens, hw, s)
        cross.append(s_new)
    torch.testing.assert_close(layer.forward_blocks(x), tokens.transpose(1, 2).reshape_as(x))


def test_tables_at_other_resolutions():
    block = FcaBlock(8, 2, (6, 6), inner_depth=2, max_cross=12, emit=False).double()
    _randomise(block, 2)
    # a smaller grid reads the same offsets |dy| * W0 + |dx| of the table built for 6 x 6: exact
    bias = block.position_bias(3, 4)
    dy = (torch.arange(3).repeat_interleave(4)[:, None] - torch.arange(3).repeat_interleave(4)[None]).abs()
    dx = (torch.arange(4).repeat(3)[:, None] - torch.arange(4).repeat(3)[None]).abs()
    torch.testing.assert_close(bias, block.attention_biases[:, dy * 6 + dx])
    # at the construction grid: the released table as it is
    torch.testing.assert_close(
        block.position_bias(6, 6), block.attention_biases[:, released_bias_index(6, 6)]
    )
    # larger grid: resized table, still a function of (|dy|, |dx|)
    big = block.position_bias(9, 9)
    assert big.shape == (2, 81, 81)
    torch.testing.assert_close(big[:, 0, 10], big[:, 10, 20])
    # cross tokens: ceil(6/4)^2 = 4 per earlier block at 24 x 24 input; a 12 x 12 grid has 9
    assert block.s_token_bias.shape[-1] == 2 * 4
    assert block._cross_table(block.s_token_bias, (3, 3)).shape == (1, 2, 1, 2 * 9)
    hw = (12, 12)
    x = torch.randn(1, 144, 8, dtype=F64)
    out, _ = block(x, hw, torch.randn(1, 2 * 9, 8, dtype=F64))
    assert out.shape == x.shape and torch.isfinite(out).all()


def _tiny(**kw) -> FcaFormer:
    return FcaFormer((16, 24, 32, 40), (1, 1, 3, 2), (2, 4), num_classes=5, img_size=64, **kw)


def test_stage_layout_and_input_checks():
    model = _tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    maps = model.forward_intermediates(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 16, 16), (24, 8, 8), (32, 4, 4), (40, 2, 2)]
    assert [f.reduction for f in model.feature_info] == [4, 8, 16, 32]
    assert math.ceil(4 / 4) ** 2 * 2 == model.layer_2.blocks[2].s_token_bias.shape[-1]
    with pytest.raises(ConfigError, match="FcaFormer"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ConfigError, match="divisible by 32"):
        model(torch.randn(1, 3, 40, 40))


def test_official_checkpoint_layout_loads(tmp_path):
    torch.manual_seed(3)
    model = _tiny().double().eval()
    _randomise(model, 4)
    ours = model.state_dict()
    # names of the released image_classification/models/fcaformer.py
    for key in (
        "patch_embed.seq.0.c.weight",
        "patch_embed.seq.2.bn.running_var",
        "layer_0.blocks.0.gamma",
        "layer_0.blocks.0.pwconv1.weight",
        "layer_0.downsample.conv2.c.weight",
        "layer_2.blocks.0.dw_conv.weight",
        "layer_2.blocks.1.s_token_bias",
        "layer_2.blocks.1.s_scale_factors",
        "layer_2.blocks.1.s_norm.weight",
        "layer_2.blocks.2.attention_biases",
        "layer_2.blocks.2.local_conv.bn.weight",
        "layer_2.blocks.2.mlp.norm.weight",
        "layer_3.blocks.1.gamma_2",
    ):
        assert key in ours, key
    assert "layer_2.blocks.2.dw_conv.weight" not in ours  # the last block emits no cross tokens
    assert "layer_3.downsample.conv1.c.weight" not in ours
    official = {}
    for k, v in ours.items():
        k = k.replace("head.norm.", "norm_head.").replace("head.fc.", "head.")
        official[k] = v.clone()
    path = tmp_path / "fcaformer_official.pth"
    torch.save(official, path)
    fresh = _tiny().double().eval()
    load_checkpoint(fresh, path, filter_fn=MODEL_CFGS["fcaformer_l1"]["checkpoint_filter_fn"])
    x = torch.randn(1, 3, 64, 64, dtype=F64)
    torch.testing.assert_close(fresh(x), model(x))
