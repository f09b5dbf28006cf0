"""Tests for interplay.core.nn (MultiHeadAttention, DropPath, TransformerBlock) and the demo classifier.

MultiHeadAttention is checked against a plain float64 reference built from the module's own projection
weights (explicit softmax(QK^T / sqrt(d) + mask) V per head), against torch.nn.MultiheadAttention with
the weights copied across, and with torch.autograd.gradcheck.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.demo import REGISTRY, TransformerClassifier
from interplay.core.nn import DropPath, FeedForward, MultiHeadAttention, TransformerBlock

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Tiny tensors: intra-op threading only adds overhead (and stalls badly on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# Reference attention
# --------------------------------------------------------------------------------------------------


def _linear64(layer: nn.Linear, x: Tensor) -> Tensor:
    out = x.double() @ layer.weight.double().T
    return out if layer.bias is None else out + layer.bias.double()


def reference_mha(
    m: MultiHeadAttention,
    x: Tensor,
    context: Tensor | None = None,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """Explicit float64 multi-head attention from ``m``'s weights.

    ``mask``: bool, broadcastable to ``[B, H, Lq, Lk]``, True = may attend. Rows with no visible key
    give zero attention output (before the output projection).
    """
    context = x if context is None else context
    b, lq, _ = x.shape
    lk = context.shape[1]
    h, kvh, hd = m.heads, m.kv_heads, m.head_dim
    q = _linear64(m.q_proj, x).reshape(b, lq, h, hd)
    kv = _linear64(m.kv_proj, context)
    k = kv[..., : kvh * hd].reshape(b, lk, kvh, hd)
    v = kv[..., kvh * hd :].reshape(b, lk, kvh, hd)
    full_mask = None if mask is None else mask.expand(b, h, lq, lk)
    group = h // kvh
    heads_out = []
    for head in range(h):
        g = head // group  # query head `head` reads key/value head `g`
        scores = q[:, :, head] @ k[:, :, g].transpose(-1, -2) / math.sqrt(hd)  # [B, Lq, Lk]
        if bias is not None:
            scores = scores + bias.double().expand(b, h, lq, lk)[:, head]
        if full_mask is not None:
            allowed = full_mask[:, head]
            scores = scores.masked_fill(~allowed, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            weights = torch.where(allowed.any(-1, keepdim=True), weights, torch.zeros_like(weights))
        else:
            weights = torch.softmax(scores, dim=-1)
        heads_out.append(weights @ v[:, :, g])  # [B, Lq, hd]
    out = torch.cat(heads_out, dim=-1)  # [B, Lq, H * hd], head-major like the module
    return _linear64(m.out_proj, out)


def causal_mask(lq: int, lk: int) -> Tensor:
    assert lq == lk
    return torch.ones(lq, lk, dtype=torch.bool).tril()


def padding_mask(lengths: list[int], lk: int) -> Tensor:
    return torch.arange(lk)[None, :] < torch.tensor(lengths)[:, None]


def assert_close(actual: Tensor, expected: Tensor, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# MultiHeadAttention vs reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "heads", "kv_heads", "b", "l"),
    [
        (32, 4, None, 2, 7),
        (64, 8, 2, 2, 6),  # GQA
        (64, 8, 1, 2, 5),  # MQA
        (32, 4, None, 3, 1),  # L = 1
        (32, 4, 2, 2, 63),  # L = 63
        (120, 2, None, 2, 9),  # head dim 60
    ],
)
def test_self_attention_matches_reference(dim, heads, kv_heads, b, l):
    m = MultiHeadAttention(dim, heads, kv_heads=kv_heads)
    x = torch.randn(b, l, dim)
    out = m(x)
    assert out.shape == (b, l, dim)
    assert_close(out, reference_mha(m, x))


def test_self_attention_without_qkv_bias_matches_reference():
    m = MultiHeadAttention(32, 4, qkv_bias=False)
    assert m.q_proj.bias is None and m.kv_proj.bias is None
    x = torch.randn(2, 5, 32)
    assert_close(m(x), reference_mha(m, x))


@pytest.mark.parametrize(
    ("dim", "heads", "kv_heads", "kv_dim", "lq", "lk"),
    [
        (32, 4, None, 20, 5, 9),
        (32, 4, None, None, 9, 3),
        (64, 8, 2, 24, 4, 11),  # GQA cross-attention
        (120, 2, None, 7, 1, 63),  # head dim 60, L = 1 queries
    ],
)
def test_cross_attention_matches_reference(dim, heads, kv_heads, kv_dim, lq, lk):
    m = MultiHeadAttention(dim, heads, kv_heads=kv_heads, kv_dim=kv_dim)
    x = torch.randn(2, lq, dim)
    context = torch.randn(2, lk, kv_dim or dim)
    out = m(x, context)
    assert out.shape == (2, lq, dim)
    assert_close(out, reference_mha(m, x, context))


def test_gqa_shares_key_value_heads_in_groups():
    """heads=8, kv_heads=2: query heads 0-3 read KV head 0, heads 4-7 read KV head 1."""
    m = MultiHeadAttention(64, 8, kv_heads=2)
    assert m.kv_proj.out_features == 2 * 2 * m.head_dim
    x = torch.randn(2, 6, 64)
    assert_close(m(x), reference_mha(m, x))
    # A wrong head grouping (heads cycling through KV heads) gives a different answer: the check above
    # can tell the two apart.
    wrong = MultiHeadAttention(64, 8, kv_heads=2)
    wrong.load_state_dict(m.state_dict())
    hd = m.head_dim
    with torch.no_grad():
        perm = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in [0, 2, 4, 6, 1, 3, 5, 7]])
        wrong.q_proj.weight.copy_(m.q_proj.weight[perm])
        wrong.q_proj.bias.copy_(m.q_proj.bias[perm])
        wrong.out_proj.weight.copy_(m.out_proj.weight[:, perm])
    assert not torch.allclose(wrong(x), m(x), atol=1e-4)


@pytest.mark.parametrize(("heads", "kv_heads", "l"), [(4, None, 7), (8, 2, 63), (2, None, 1)])
def test_causal_matches_reference(heads, kv_heads, l):
    dim = 16 * heads
    m = MultiHeadAttention(dim, heads, kv_heads=kv_heads)
    x = torch.randn(2, l, dim)
    expected = reference_mha(m, x, mask=causal_mask(l, l))
    assert_close(m(x, is_causal=True), expected)
    # Same result on the path that folds the causal mask into a materialised mask.
    all_real = torch.ones(2, l, dtype=torch.bool)
    assert_close(m(x, is_causal=True, key_padding_mask=all_real), expected)
    if l > 1:
        assert not torch.allclose(m(x), m(x, is_causal=True), atol=1e-4)


@pytest.mark.parametrize(("kv_heads", "lk"), [(None, 9), (2, 63)])
def test_key_padding_mask_variable_lengths(kv_heads, lk):
    m = MultiHeadAttention(64, 8, kv_heads=kv_heads, kv_dim=24)
    x = torch.randn(3, 5, 64)
    context = torch.randn(3, lk, 24)
    kpm = padding_mask([lk, 3, 1], lk)
    out = m(x, context, key_padding_mask=kpm)
    assert_close(out, reference_mha(m, x, context, mask=kpm[:, None, None, :]))
    # Padded keys really are ignored: changing them leaves the output unchanged.
    context2 = context.clone()
    context2[~kpm] = torch.randn(int((~kpm).sum()), 24)
    assert_close(m(x, context2, key_padding_mask=kpm), out)
    assert not torch.allclose(m(x, context2), m(x, context), atol=1e-4)


def test_key_padding_mask_with_causal_matches_reference():
    m = MultiHeadAttention(32, 4)
    x = torch.randn(3, 8, 32)
    kpm = padding_mask([8, 5, 2], 8)
    expected = reference_mha(m, x, mask=kpm[:, None, None, :] & causal_mask(8, 8))
    assert_close(m(x, key_padding_mask=kpm, is_causal=True), expected)


@pytest.mark.parametrize("mask_shape", ["lq_lk", "b_1_lq_lk", "b_h_lq_lk"])
def test_arbitrary_boolean_attn_mask(mask_shape):
    b, h, lq, lk = 2, 4, 6, 10
    m = MultiHeadAttention(32, h, kv_dim=12)
    x, context = torch.randn(b, lq, 32), torch.randn(b, lk, 12)
    shape = {"lq_lk": (lq, lk), "b_1_lq_lk": (b, 1, lq, lk), "b_h_lq_lk": (b, h, lq, lk)}[mask_shape]
    mask = torch.rand(shape) < 0.5
    mask[..., 0, :] = False  # at least one fully masked row
    mask[..., 1, 3] = True  # and at least one visible key elsewhere
    out = m(x, context, attn_mask=mask)
    assert_close(out, reference_mha(m, x, context, mask=mask))


def test_attn_mask_combined_with_key_padding_mask_and_causal():
    b, h, l = 3, 4, 9
    m = MultiHeadAttention(32, h, kv_heads=2)
    x = torch.randn(b, l, 32)
    mask = torch.rand(b, h, l, l) < 0.7
    kpm = padding_mask([9, 6, 2], l)
    expected = reference_mha(m, x, mask=mask & kpm[:, None, None, :] & causal_mask(l, l))
    assert_close(m(x, attn_mask=mask, key_padding_mask=kpm, is_causal=True), expected)


@pytest.mark.parametrize(("lq", "lk"), [(3, 5), (5, 3)])
def test_causal_with_and_without_padding_mask_agree_when_lq_differs_from_lk(lq, lk):
    """An all-True key_padding_mask must not change the result of a causal call with Lq != Lk."""
    m = MultiHeadAttention(16, 4)
    x, context = torch.randn(2, lq, 16), torch.randn(2, lk, 16)
    plain = m(x, context, is_causal=True)
    padded = m(x, context, is_causal=True, key_padding_mask=torch.ones(2, lk, dtype=torch.bool))
    assert_close(padded, plain)


# --------------------------------------------------------------------------------------------------
# Against torch.nn.MultiheadAttention
# --------------------------------------------------------------------------------------------------


def _copy_into_ours(theirs: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    dim = ours.dim
    with torch.no_grad():
        if theirs.in_proj_weight is not None:
            ours.q_proj.weight.copy_(theirs.in_proj_weight[:dim])
            ours.kv_proj.weight.copy_(theirs.in_proj_weight[dim:])
        else:
            ours.q_proj.weight.copy_(theirs.q_proj_weight)
            ours.kv_proj.weight.copy_(torch.cat([theirs.k_proj_weight, theirs.v_proj_weight]))
        ours.q_proj.bias.copy_(theirs.in_proj_bias[:dim])
        ours.kv_proj.bias.copy_(theirs.in_proj_bias[dim:])
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


def test_matches_torch_multihead_attention_self():
    dim, heads = 48, 6
    theirs = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():  # torch initialises these biases to zero; make them matter
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = MultiHeadAttention(dim, heads)
    _copy_into_ours(theirs, ours)
    x = torch.randn(3, 11, dim)
    kpm = padding_mask([11, 7, 2], 11)
    attn_mask = torch.ones(11, 11, dtype=torch.bool).tril()
    # torch's masks use True = "may NOT attend"
    expected, _ = theirs(x, x, x, key_padding_mask=~kpm, attn_mask=~attn_mask, need_weights=False)
    assert_close(ours(x, key_padding_mask=kpm, attn_mask=attn_mask), expected)
    expected_plain, _ = theirs(x, x, x, need_weights=False)
    assert_close(ours(x), expected_plain)


def test_matches_torch_multihead_attention_cross():
    dim, heads, kv_dim = 32, 4, 20
    theirs = nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kv_dim, vdim=kv_dim)
    with torch.no_grad():
        theirs.in_proj_bias.normal_()
        theirs.out_proj.bias.normal_()
    ours = MultiHeadAttention(dim, heads, kv_dim=kv_dim)
    _copy_into_ours(theirs, ours)
    x, context = torch.randn(2, 5, dim), torch.randn(2, 8, kv_dim)
    kpm = padding_mask([8, 4], 8)
    expected, _ = theirs(x, context, context, key_padding_mask=~kpm, need_weights=False)
    assert_close(ours(x, context, key_padding_mask=kpm), expected)


# --------------------------------------------------------------------------------------------------
# Fully masked rows, gradients
# --------------------------------------------------------------------------------------------------


def test_fully_masked_rows_give_out_proj_bias_exactly():
    m = MultiHeadAttention(32, 4, kv_heads=2)
    x = torch.randn(3, 6, 32)
    kpm = padding_mask([6, 0, 3], 6)  # batch element 1 has no real key at all
    out = m(x, key_padding_mask=kpm)
    assert not torch.isnan(out).any()
    assert torch.equal(out[1], m.out_proj.bias.detach().expand(6, 32))
    assert not torch.allclose(out[0], m.out_proj.bias.detach().expand(6, 32))

    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[2] = False  # query 2 sees nothing
    out = m(x, attn_mask=mask)
    assert not torch.isnan(out).any()
    assert torch.equal(out[:, 2], m.out_proj.bias.detach().expand(3, 32))
    assert_close(out, reference_mha(m, x, mask=mask))


def test_backward_through_fully_masked_rows_is_finite():
    m = MultiHeadAttention(32, 4)
    x = torch.randn(3, 6, 32, requires_grad=True)
    kpm = padding_mask([6, 0, 3], 6)
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[4] = False
    out = m(x, attn_mask=mask, key_padding_mask=kpm)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    # Batch element 1 sees no key: its output is the constant bias, so its input gets no gradient.
    assert torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
    assert x.grad[0].abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _double(module: nn.Module) -> nn.Module:
    return module.double()


@pytest.mark.parametrize(
    ("kv_heads", "kv_dim", "masked"),
    [(None, None, False), (1, 3, False), (None, 3, True)],
)
def test_gradcheck(kv_heads, kv_dim, masked):
    m = _double(MultiHeadAttention(4, 2, kv_heads=kv_heads, kv_dim=kv_dim))
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    context = torch.randn(2, 4, kv_dim or 4, dtype=torch.float64, requires_grad=True)
    kpm = padding_mask([4, 0], 4) if masked else None  # batch element 1 fully masked

    def fn(x_, c_):
        return m(x_, c_, key_padding_mask=kpm)

    assert torch.autograd.gradcheck(fn, (x, context), eps=1e-6, atol=1e-5)


def test_gradcheck_causal_self_attention():
    m = _double(MultiHeadAttention(4, 2))
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x_: m(x_, is_causal=True), (x,), eps=1e-6, atol=1e-5)


def test_parameter_gradients_match_reference():
    m = MultiHeadAttention(32, 8, kv_heads=2, kv_dim=12)
    x, context = torch.randn(2, 5, 32), torch.randn(2, 7, 12)
    kpm = padding_mask([7, 3], 7)
    m(x, context, key_padding_mask=kpm).square().sum().backward()
    ours = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    reference_mha(m, x, context, mask=kpm[:, None, None, :]).square().sum().backward()
    for name, p in m.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-4, rtol=1e-4, msg=name)


# --------------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------------


def test_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"dim=10 is not divisible by heads=3"):
        MultiHeadAttention(10, 3)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValueError, match=r"kv_heads=3 must divide heads=4"):
        MultiHeadAttention(16, 4, kv_heads=3)


@pytest.mark.parametrize("shape", [(5, 16), (2, 5, 12), (1, 2, 5, 16)])
def test_wrong_input_shape(shape):
    m = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"expected x of shape \[B, L, 16\]") as info:
        m(torch.randn(shape))
    assert str(tuple(shape)) in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.uint8])
def test_non_bool_attn_mask(dtype):
    m = MultiHeadAttention(16, 4)
    with pytest.raises(TypeError, match=r"attn_mask must be boolean"):
        m(torch.randn(2, 5, 16), attn_mask=torch.ones(5, 5, dtype=dtype))


def test_key_padding_mask_wrong_length_or_dtype():
    m = MultiHeadAttention(16, 4)
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor of shape \[2, 5\]"):
        m(x, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor of shape \[2, 7\]"):
        m(x, torch.randn(2, 7, 16), key_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask"):
        m(x, key_padding_mask=torch.ones(2, 5))


# --------------------------------------------------------------------------------------------------
# DropPath
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 3), (4, 5, 6), (2, 3, 4, 4)])
def test_drop_path_identity_in_eval_and_with_p0(shape):
    x = torch.randn(shape)
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)
    dp0 = DropPath(0.0).train()
    assert torch.equal(dp0(x), x)
    assert torch.equal(DropPath().train()(x), x)


def test_drop_path_drops_whole_samples_and_rescales_exactly():
    n = 20000
    x = torch.randn(n, 3, 4) + 0.5
    out = DropPath(0.5).train()(x)
    flat_out, flat_x = out.reshape(n, -1), x.reshape(n, -1)
    dropped = (flat_out == 0).all(dim=1)
    kept = ~dropped
    # every sample is either dropped entirely or kept entirely, scaled by exactly 1 / (1 - p) = 2
    assert torch.equal(flat_out[kept], 2 * flat_x[kept])
    assert (flat_out[dropped] == 0).all()
    assert abs(dropped.float().mean().item() - 0.5) < 0.02
    # a mask per sample, not per element: the same sample is never partly dropped
    assert ((flat_out == 0).any(dim=1) == dropped).all()


def test_drop_path_preserves_expectation():
    x = torch.randn(1, 6)
    many = x.expand(40000, 6).contiguous()
    for p in (0.2, 0.5, 0.9):
        out = DropPath(p).train()(many)
        kept = (out != 0).all(dim=1)
        torch.testing.assert_close(out[kept], many[kept] / (1 - p), rtol=1e-6, atol=1e-6)
        assert abs((~kept).float().mean().item() - p) < 0.02
        torch.testing.assert_close(out.mean(dim=0), x[0], rtol=0.1, atol=0.05)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_drop_path_probability_out_of_range(p):
    with pytest.raises(ValueError, match=r"drop path probability must be in \[0, 1\)"):
        DropPath(p)


# --------------------------------------------------------------------------------------------------
# TransformerBlock
# --------------------------------------------------------------------------------------------------


def test_feed_forward_structure():
    ff = FeedForward(8, 20)
    x = torch.randn(3, 8)
    lin1, lin2 = ff.net[0], ff.net[3]
    assert (lin1.in_features, lin1.out_features, lin2.out_features) == (8, 20, 8)
    assert_close(ff(x), lin2(F.gelu(lin1(x))))
    assert FeedForward(8).net[0].out_features == 32


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_transformer_block_is_pre_norm_residual(kv_heads):
    blk = TransformerBlock(32, 4, mlp_ratio=2.0, dropout=0.2, drop_path=0.3, kv_heads=kv_heads).eval()
    x = torch.randn(2, 7, 32)
    kpm = padding_mask([7, 4], 7)
    with torch.no_grad():
        h = x + reference_mha(blk.attn, blk.norm1(x), mask=kpm[:, None, None, :]).float()
        ffn = blk.ffn.net
        expected = h + ffn[3](F.gelu(ffn[0](blk.norm2(h))))
        out = blk(x, key_padding_mask=kpm)
    assert_close(out, expected)


def test_transformer_block_causal_ignores_future_tokens():
    blk = TransformerBlock(32, 4).eval()
    l = 9
    x = torch.randn(2, l, 32)
    all_real = torch.ones(2, l, dtype=torch.bool)
    for t in (0, 4, l - 2):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(2, l - t - 1, 32)
        # both the SDPA is_causal path and the materialised-mask path
        for kwargs in ({}, {"key_padding_mask": all_real}):
            a = blk(x, is_causal=True, **kwargs)
            b = blk(changed, is_causal=True, **kwargs)
            assert_close(b[:, : t + 1], a[:, : t + 1])
            assert not torch.allclose(b[:, t + 1 :], a[:, t + 1 :], atol=1e-4)
        # without causality the past does see the future (the check above can fail)
        assert not torch.allclose(blk(changed)[:, : t + 1], blk(x)[:, : t + 1], atol=1e-4)


# --------------------------------------------------------------------------------------------------
# TransformerClassifier
# --------------------------------------------------------------------------------------------------


def _tiny_classifier(**kwargs) -> TransformerClassifier:
    params = {
        "num_classes": 5,
        "image_size": 4,
        "in_channels": 1,
        "patch_size": 2,
        "dim": 16,
        "depth": 2,
        "heads": 2,
    }
    params.update(kwargs)
    return TransformerClassifier(**params)


def test_classifier_output_shape_and_registry():
    model = _tiny_classifier()
    assert model(torch.randn(3, 1, 4, 4)).shape == (3, 5)
    built = REGISTRY.models.create("transformer-classifier", num_classes=7, image_size=8, dim=16, heads=2)
    assert isinstance(built, TransformerClassifier)
    assert built(torch.randn(2, 1, 8, 8)).shape == (2, 7)


def test_patchify_exact_placement():
    model = _tiny_classifier()
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    # image rows: [0 1 2 3] [4 5 6 7] [8 9 10 11] [12 13 14 15]; patches in row-major patch order,
    # each flattened row-major
    expected = torch.tensor([[[0.0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]])
    assert torch.equal(model.patchify(image), expected)


def test_patchify_multichannel_is_channel_major_within_patch():
    model = _tiny_classifier(in_channels=3, image_size=6, patch_size=3)
    images = torch.randn(2, 3, 6, 6)
    patches = model.patchify(images)
    assert patches.shape == (2, 4, 27)
    for i in range(2):
        for j in range(2):
            expected = images[:, :, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].reshape(2, -1)
            assert torch.equal(patches[:, 2 * i + j], expected)


@pytest.mark.parametrize("shape", [(2, 1, 4, 5), (2, 3, 4, 4), (1, 4, 4), (2, 1, 8, 8)])
def test_classifier_wrong_image_shape(shape):
    model = _tiny_classifier()
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 1, 4, 4\]") as info:
        model(torch.randn(shape))
    assert str(tuple(shape)) in str(info.value)


def test_classifier_image_size_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match=r"image_size=5 is not divisible by patch_size=2"):
        _tiny_classifier(image_size=5)


def test_classifier_backward_reaches_all_parameters():
    model = _tiny_classifier().train()
    logits = model(torch.randn(8, 1, 4, 4))
    F.cross_entropy(logits, torch.randint(0, 5, (8,))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("lq", "lk"), [(3, 5), (5, 3), (1, 7)])
def test_causal_cross_lengths_are_bottom_right_aligned(lq, lk):
    """Query i sits at position lk - lq + i: it sees keys 0 .. lk - lq + i."""
    m = MultiHeadAttention(16, 4)
    x, context = torch.randn(2, lq, 16), torch.randn(2, lk, 16)
    allowed = torch.tensor([[j <= lk - lq + i for j in range(lk)] for i in range(lq)])
    expected = m(x, context, attn_mask=allowed)
    assert_close(m(x, context, is_causal=True), expected)


def test_bad_mask_and_context_shapes_name_the_input():
    m = MultiHeadAttention(16, 4, kv_dim=8)
    x = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match=r"key_padding_mask .* shape \[2, 4\]"):
        m(x, torch.randn(2, 4, 8), key_padding_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask .* shape \[2, 4\]"):
        m(x, torch.randn(2, 4, 8), key_padding_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"context of shape \[2, L, 8\]"):
        m(x, torch.randn(2, 4, 16))


def test_mask_spec_and_bias_at_construction_match_dense_equivalents():
    from interplay.core.attention import DenseBias, sliding_window

    torch.manual_seed(1)
    x = torch.randn(2, 9, 16)
    bias = torch.randn(1, 4, 9, 9)
    spec_module = MultiHeadAttention(16, 4, mask=sliding_window(3), bias=DenseBias(bias), backend="math")
    dense_module = MultiHeadAttention(16, 4, backend="sdpa")
    dense_module.load_state_dict(spec_module.state_dict())
    dense = sliding_window(3).dense(1, 1, 9, 9)
    out = spec_module(x)
    assert_close(out, reference_mha(spec_module, x, mask=dense, bias=bias))
    # the same spec given per call as a tensor gives the same result
    dense_module.bias = DenseBias(bias)
    assert_close(dense_module(x, attn_mask=dense), out)
    # a bias callable receives (lq, lk)
    seen = []
    spec_module.bias = lambda lq, lk: seen.append((lq, lk)) or DenseBias(bias)
    assert_close(spec_module(x), out)
    assert seen == [(9, 9)]
    with pytest.raises(TypeError, match="mask must be a MaskSpec"):
        MultiHeadAttention(16, 4, mask=torch.ones(9, 9, dtype=torch.bool))


def test_transformer_block_passes_mask_spec_to_attention():
    from interplay.core.attention import sliding_window

    torch.manual_seed(2)
    block = TransformerBlock(16, 4, mask=sliding_window(2)).eval()
    x = torch.randn(1, 8, 16)
    y = block(x)
    x2 = x.clone()
    x2[:, 0] += 5.0  # outside the window of positions >= 2 at the first layer
    y2 = block(x2)
    assert torch.allclose(y[:, 2:], y2[:, 2:]) and not torch.allclose(y[:, :2], y2[:, :2])
