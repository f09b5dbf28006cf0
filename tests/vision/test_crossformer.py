"""CrossFormer (Wang et al., ICLR 2022): SDA / LDA grouping against loop references (and core's
dilated_2d mask), the dynamic position bias against a lookup of a known function of the offsets,
a whole LSDA block against a per-group loop (with padded, masked groups), the cross-scale embedding
layers' kernels and channel split, input checks and the official checkpoint remap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interplay.core.attention import attend, masks
from interplay.core.errors import ConfigError
from interplay.vision.models.crossformer import (
    CrossFormer,
    CrossFormerBlock,
    checkpoint_filter_fn,
    group_tokens,
    ungroup_tokens,
)
from interplay.vision.models.factory import MODEL_CFGS, load_checkpoint


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _group_members(mode: str, size: int, h: int, w: int) -> list[list[tuple[int, int]]]:
    """The (row, col) of each token of each group, written from the paper's definition."""
    groups = []
    if mode == "sda":  # G x G adjacent tokens
        for gr in range(h // size):
            for gc in range(w // size):
                groups.append([(gr * size + a, gc * size + b) for a in range(size) for b in range(size)])
    else:  # tokens sampled every I positions: group (i, j) = {(I a + i, I b + j)}
        for i in range(size):
            for j in range(size):
                groups.append(
                    [(size * a + i, size * b + j) for a in range(h // size) for b in range(w // size)]
                )
    return groups


@pytest.mark.parametrize(("mode", "size", "h", "w"), [("sda", 3, 6, 9), ("lda", 4, 12, 8), ("lda", 2, 6, 6)])
def test_grouping_equals_a_loop_reference(mode, size, h, w):
    x = torch.randn(2, h, w, 5)
    got, (gh, gw) = group_tokens(x, mode, size)
    members = _group_members(mode, size, h, w)
    want = torch.stack([torch.stack([x[:, r, c] for r, c in grp], dim=1) for grp in members], dim=1)
    torch.testing.assert_close(got, want.reshape(-1, len(members[0]), 5), rtol=0, atol=0)
    assert gh * gw == len(members[0])
    if mode == "lda":
        assert (gh, gw) == (h // size, w // size)
    torch.testing.assert_close(ungroup_tokens(got, mode, size, h, w), x, rtol=0, atol=0)


def test_lda_equals_core_dilated_mask_on_the_full_grid():
    b, heads, h, w, d, interval = 2, 2, 8, 12, 4, 4
    q, k, v = (torch.randn(b, heads, h * w, d) for _ in range(3))
    full = attend(q, k, v, mask=masks.dilated_2d((h, w), interval=interval), backend="math")

    def grouped(t):  # [B, H, L, D] -> [B * nG, H, N, D]
        t, (gh, gw) = group_tokens(t.transpose(1, 2).reshape(b, h, w, heads * d), "lda", interval)
        return t.reshape(t.shape[0], gh * gw, heads, d).transpose(1, 2)

    out = attend(grouped(q), grouped(k), grouped(v))
    out = ungroup_tokens(out.transpose(1, 2).reshape(out.shape[0], -1, heads * d), "lda", interval, h, w)
    torch.testing.assert_close(out.reshape(b, h * w, heads, d).transpose(1, 2), full, rtol=1e-4, atol=1e-5)


def _offset_function(offsets: torch.Tensor, heads: int) -> torch.Tensor:
    """A known, asymmetric stand-in for the DPB MLP: ``[..., 2] (dy, dx) -> [..., heads]``."""
    dy, dx = offsets[..., :1], offsets[..., 1:]
    h = torch.arange(1, heads + 1, dtype=offsets.dtype)
    return 0.3 * h * dy + 0.1 * dx**2 - 0.2 * dx / h + 0.05 * dy * dx


@pytest.mark.parametrize(("gh", "gw"), [(3, 3), (2, 4)])
def test_dynamic_position_bias_indexes_the_offsets_of_each_pair(gh, gw):
    block = CrossFormerBlock(32, heads=2, mode="sda")
    pos = block.attn.pos
    pos.mlp = lambda offsets: _offset_function(offsets, 2)  # the MLP replaced by a lookup
    bias = pos(gh, gw).dense(gh * gw, gh * gw, torch.device("cpu"), torch.float32)[0]  # [H, N, N]
    coords = [(r, c) for r in range(gh) for c in range(gw)]
    want = torch.stack(
        [
            torch.stack(
                [_offset_function(torch.tensor([float(ri - rj), float(ci - cj)]), 2) for rj, cj in coords]
            )
            for ri, ci in coords
        ]
    ).permute(2, 0, 1)
    torch.testing.assert_close(bias, want)


def test_dpb_mlp_shape_follows_the_paper():
    block = CrossFormerBlock(64, heads=4, mode="lda")
    pos = block.attn.pos
    assert pos.pos_proj.in_features == 2 and pos.pos_proj.out_features == 64 // 16
    assert [type(m).__name__ for m in pos.pos1] == ["LayerNorm", "ReLU", "Linear"]
    assert pos.pos3[2].out_features == 4


def _block_reference(block: CrossFormerBlock, x: torch.Tensor) -> torch.Tensor:
    """x += LSDA(LN x); x += MLP(LN x), with a Python loop over the groups of real tokens: each
    group's tokens (padding excluded) attend each other with bias DPB(dy, dx) of their group
    coordinates."""
    b, h, w, c = x.shape
    attn = block.attn
    heads, d = attn.heads, attn.head_dim
    mode, size = block.grouping(h, w)
    hp, wp = -(-h // size) * size, -(-w // size) * size
    y = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias)
    q, k, v = (y @ attn.qkv.weight.t() + attn.qkv.bias).split(c, dim=-1)
    out = torch.zeros_like(y)
    for members in _group_members(mode, size, hp, wp):
        if mode == "sda":  # group coordinates of a member: its offset inside the tile
            local = [(r % size, cc % size) for r, cc in members]
        else:
            local = [(r // size, cc // size) for r, cc in members]
        real = [(m, loc) for m, loc in zip(members, local, strict=True) if m[0] < h and m[1] < w]
        rows = torch.tensor([m[0] for m, _ in real])
        cols = torch.tensor([m[1] for m, _ in real])
        loc = torch.tensor([lo for _, lo in real], dtype=torch.float32)
        offsets = loc[:, None, :] - loc[None, :, :]  # (dy, dx) of each (query, key) pair
        bias = attn.pos.mlp(offsets).permute(2, 0, 1)  # [H, n, n]
        for hi in range(heads):
            sl = slice(hi * d, (hi + 1) * d)
            qi, ki, vi = q[:, rows, cols, sl], k[:, rows, cols, sl], v[:, rows, cols, sl]
            a = torch.softmax(qi @ ki.transpose(-1, -2) / d**0.5 + bias[hi], dim=-1)
            out[:, rows, cols, sl] = a @ vi
    x = x + out @ attn.proj.weight.t() + attn.proj.bias
    return x + block.mlp(F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias))


@pytest.mark.parametrize(
    ("mode", "h", "w", "expect"),
    [
        ("sda", 14, 14, ("sda", 7)),  # 2 x 2 groups of 7 x 7
        ("lda", 16, 24, ("lda", 8)),  # 8 x 8 groups of 2 x 3, interval 8
        ("sda", 10, 9, ("sda", 7)),  # padded to 14 x 14, padded keys masked
        ("lda", 12, 9, ("lda", 8)),  # padded to 16 x 16: groups of 2 x 2 with missing tokens
        ("lda", 5, 6, ("sda", 5)),  # a map no larger than G is one SDA group of its size
    ],
)
def test_block_equals_a_per_group_loop(mode, h, w, expect):
    torch.manual_seed(0)
    block = CrossFormerBlock(32, heads=2, mode=mode, group_size=7, interval=8).eval()
    _randomise(block, seed=1)
    assert block.grouping(h, w) == expect
    x = torch.randn(2, h, w, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _block_reference(block, x), rtol=1e-4, atol=1e-4)


def test_cross_scale_embedding_layers():
    model = CrossFormer(64, (1, 1, 2, 2), (2, 4, 8, 16), num_classes=3)
    projs = model.patch_embed.projs
    assert [p.kernel_size[0] for p in projs] == [4, 8, 16, 32]
    assert [p.stride[0] for p in projs] == [4] * 4
    assert [p.padding[0] for p in projs] == [0, 2, 6, 14]
    assert [p.out_channels for p in projs] == [32, 16, 8, 8]
    merge = model.layers[0].downsample
    assert merge.norm.normalized_shape == (64,)
    assert [(r.kernel_size[0], r.stride[0], r.padding[0], r.out_channels) for r in merge.reductions] == [
        (2, 2, 0, 64),
        (4, 2, 1, 64),
    ]
    assert model.layers[-1].downsample is None
    assert [blk.mode for blk in model.layers[2].blocks] == ["sda", "lda"]
    assert [blk.interval for blk in (model.layers[i].blocks[0] for i in range(4))] == [8, 4, 2, 1]
    x = torch.randn(1, 3, 64, 64)
    assert model.patch_embed(x).shape == (1, 16, 16, 64)
    # the CEL is the concatenation of the individual convolutions, then LayerNorm
    cat = torch.cat([p(x) for p in projs], dim=1).permute(0, 2, 3, 1)
    torch.testing.assert_close(model.patch_embed(x), model.patch_embed.norm(cat))


def test_wrong_inputs_are_config_errors_naming_the_model():
    model = CrossFormer(32, (1, 1, 1, 1), (1, 2, 4, 8), num_classes=3)
    model.pretrained_cfg = {"name": "crossformer_tiny"}
    with pytest.raises(ConfigError, match="crossformer_tiny"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ConfigError, match="crossformer_tiny.*divisible by 32"):
        model(torch.randn(1, 3, 64, 80))


def test_official_checkpoint_remap(tmp_path):
    assert MODEL_CFGS["crossformer_tiny"]["checkpoint_filter_fn"] is checkpoint_filter_fn
    src = CrossFormer(32, (1, 2, 2, 1), (1, 2, 4, 8), num_classes=4).eval()
    _randomise(src, seed=2)
    official = {}
    for key, value in src.state_dict().items():
        official[key.replace("head.fc.", "head.")] = value.clone()
        if key.endswith("attn.qkv.weight"):  # the released model stores its DPB inputs as buffers
            prefix = key.removesuffix("qkv.weight")
            official[prefix + "biases"] = torch.zeros(169, 2)
            official[prefix + "relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    for key in (
        "patch_embed.projs.3.weight",
        "layers.1.blocks.1.attn.pos.pos1.0.weight",
        "layers.0.downsample.reductions.1.bias",
        "norm.weight",
        "head.weight",
    ):
        assert key in official
    torch.save({"model": official}, tmp_path / "crossformer.pth")
    dst = CrossFormer(32, (1, 2, 2, 1), (1, 2, 4, 8), num_classes=4).eval()
    load_checkpoint(dst, tmp_path / "crossformer.pth", filter_fn=checkpoint_filter_fn, num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
