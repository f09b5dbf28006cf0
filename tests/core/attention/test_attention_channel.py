"""Channel (transposed) attention: DaViT, Restormer and MANIQA forms against float64 loop references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interplay.core.attention.channel import (
    ChannelAttention,
    TransposedAttention,
    channel_attention,
    channel_attention_reference,
)

CG = 60  # odd-ish channels per group, as the attention contract asks (D = 60)


def loop_reference(q, k, v, variant, temperature=None):
    """Ground truth written out per (batch, group) in float64, straight from the equations."""
    b, g, n, cg = q.shape
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty(b, g, n, cg, dtype=torch.float64)
    attn = torch.empty(b, g, cg, cg, dtype=torch.float64)
    for bi in range(b):
        for gi in range(g):
            qm, km, vm = q[bi, gi], k[bi, gi], v[bi, gi]  # [N, Cg]
            if variant == "davit":
                logits = (km * cg**-0.5).T @ vm  # k^T v with k scaled by Cg^-1/2
                a = torch.softmax(logits, dim=1)
                o = (a @ qm.T).T
            elif variant == "restormer":
                qn = qm / qm.norm(dim=0, keepdim=True)
                kn = km / km.norm(dim=0, keepdim=True)
                a = torch.softmax((qn.T @ kn) * temperature[gi].double().item(), dim=1)
                o = (a @ vm.T).T
            elif variant == "maniqa":
                a = torch.softmax(qm.T @ km / n**0.5, dim=1)
                o = (a @ vm.T).T
            else:
                raise AssertionError(variant)
            out[bi, gi], attn[bi, gi] = o, a
    return out, attn


def call(fn, q, k, v, variant, temperature=None, **kw):
    if variant == "davit":
        return fn(q, k, v, **kw)
    if variant == "restormer":
        return fn(q, k, v, normalize=True, temperature=temperature, **kw)
    return fn(q, k, v, scores="qk", **kw)


def make_qkv(b, g, n, cg, dtype=torch.float64, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, g, n, cg, generator=gen, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)
    ]


VARIANTS = ["davit", "restormer", "maniqa"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 63, 1000])
@pytest.mark.parametrize("g", [1, 3])
def test_matches_float64_loop_reference(variant, n, g):
    q, k, v = make_qkv(2, g, n, CG, dtype=torch.float64, seed=n + g)
    temperature = torch.tensor([0.5, 1.0, 2.0][:g], dtype=torch.float64).reshape(g, 1, 1)
    want_out, want_attn = loop_reference(q, k, v, variant, temperature)
    for fn in (channel_attention, channel_attention_reference):
        out, attn = call(fn, q, k, v, variant, temperature, return_attention=True)
        assert out.shape == (2, g, n, CG) and attn.shape == (2, g, CG, CG)
        torch.testing.assert_close(out, want_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(attn, want_attn, rtol=1e-10, atol=1e-10)
    # float32 fast path against the float64 truth
    out32 = call(channel_attention, q.float(), k.float(), v.float(), variant, temperature.float())
    torch.testing.assert_close(out32.double(), want_out, rtol=1e-3, atol=1e-4)


def test_maniqa_form_matches_released_tab_layout():
    """MANIQA's TABlock works on [B, C, N]: attn = softmax(q k^T * N^-1/2) over channels, out = attn v."""
    b, c, n = 2, 12, 49
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, c, n, generator=gen, dtype=torch.float64) for _ in range(3))
    attn = torch.softmax(q @ k.transpose(-2, -1) * n**-0.5, dim=-1)
    want = attn @ v  # [B, C, N], before the released code's transpose/reshape
    to_ours = lambda t: t.transpose(1, 2).unsqueeze(1)  # noqa: E731  [B, C, N] -> [B, 1, N, C]
    out = channel_attention(to_ours(q), to_ours(k), to_ours(v), scores="qk")
    torch.testing.assert_close(out[:, 0].transpose(1, 2), want)


def davit_released_forward(module, x):
    """DaViT's ChannelAttention.forward, line by line as released."""
    B, N, C = x.shape
    qkv = module.qkv(x).reshape(B, N, 3, module.heads, C // module.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    k = k * module.scale
    attention = k.transpose(-1, -2) @ v
    attention = attention.softmax(dim=-1)
    x = (attention @ q.transpose(-1, -2)).transpose(-1, -2)
    x = x.transpose(1, 2).reshape(B, N, C)
    x = module.proj(x)
    return x


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize(("n", "heads"), [(1, 1), (63, 3), (196, 4)])
def test_channel_attention_module_equals_davit_release(qkv_bias, n, heads):
    torch.manual_seed(0)
    module = ChannelAttention(heads * CG, heads, qkv_bias=qkv_bias).double()
    x = torch.randn(2, n, heads * CG, dtype=torch.float64)
    out, attn = module(x, return_attention=True)
    torch.testing.assert_close(out, davit_released_forward(module, x), rtol=1e-12, atol=1e-12)
    assert attn.shape == (2, heads, CG, CG)
    assert set(module.state_dict()) == {"qkv.weight", "proj.weight", "proj.bias"} | (
        {"qkv.bias"} if qkv_bias else set()
    )


def restormer_released_forward(module, x, h, w):
    """Restormer's MDTA forward on [B, C, H, W], with 1x1 convs built from the module's Linears."""
    b, n, c = x.shape
    img = x.transpose(1, 2).reshape(b, c, h, w)
    qkv = F.conv2d(img, module.qkv.weight[:, :, None, None], module.qkv.bias)
    qkv = module.qkv_dwconv(qkv)
    q, k, v = qkv.chunk(3, dim=1)
    q, k, v = (t.reshape(b, module.heads, c // module.heads, h * w) for t in (q, k, v))
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1)) * module.temperature
    attn = attn.softmax(dim=-1)
    out = (attn @ v).reshape(b, c, h, w)
    out = F.conv2d(out, module.project_out.weight[:, :, None, None], module.project_out.bias)
    return out.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("bias", [False, True])
def test_transposed_attention_equals_restormer_release(bias):
    torch.manual_seed(0)
    module = TransposedAttention(24, 3, bias=bias, dwconv=True).double()
    with torch.no_grad():
        module.temperature.copy_(torch.tensor([0.5, 1.0, 3.0]).reshape(3, 1, 1))
    x = torch.randn(2, 5 * 7, 24, dtype=torch.float64)
    out = module(x, (5, 7))
    torch.testing.assert_close(out, restormer_released_forward(module, x, 5, 7), rtol=1e-12, atol=1e-12)


def test_transposed_attention_without_conv_uses_restormer_form():
    torch.manual_seed(0)
    module = TransposedAttention(2 * CG, 2).double()
    assert module.qkv_dwconv is None and module.temperature.shape == (2, 1, 1)
    x = torch.randn(3, 17, 2 * CG, dtype=torch.float64)
    out, attn = module(x, return_attention=True)
    q, k, v = module.qkv(x).reshape(3, 17, 3, 2, CG).permute(2, 0, 3, 1, 4)
    want, want_attn = loop_reference(q, k, v, "restormer", module.temperature.detach())
    torch.testing.assert_close(attn, want_attn)
    torch.testing.assert_close(out, module.project_out(want.transpose(1, 2).reshape(3, 17, 2 * CG)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_rows_sum_to_one_and_shape_is_independent_of_n(variant):
    temperature = torch.full((3, 1, 1), 2.0)
    shapes = set()
    for n in (1, 63, 1000):
        q, k, v = make_qkv(2, 3, n, CG, dtype=torch.float32, seed=n)
        _, attn = call(channel_attention, q, k, v, variant, temperature, return_attention=True)
        shapes.add(tuple(attn.shape))
        assert (attn >= 0).all()
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, CG))
    assert shapes == {(2, 3, CG, CG)}


def test_davit_form_is_permutation_equivariant_over_tokens():
    q, k, v = make_qkv(2, 3, 63, CG, dtype=torch.float64, seed=3)
    perm = torch.randperm(63, generator=torch.Generator().manual_seed(0))
    out, attn = channel_attention(q, k, v, return_attention=True)
    out_p, attn_p = channel_attention(q[:, :, perm], k[:, :, perm], v[:, :, perm], return_attention=True)
    torch.testing.assert_close(out_p, out[:, :, perm])
    torch.testing.assert_close(attn_p, attn)  # the [Cg, Cg] matrix sums over tokens: order-free
    torch.manual_seed(0)
    module = ChannelAttention(3 * CG, 3, qkv_bias=True).double()
    x = torch.randn(2, 63, 3 * CG, dtype=torch.float64)
    torch.testing.assert_close(module(x[:, perm]), module(x)[:, perm])


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_is_linear_in_the_mixed_operand(variant):
    """Softmax only ever touches the [Cg, Cg] scores: the output is linear in q (DaViT) / v (others).

    Equivariance alone cannot catch a softmax over tokens (softmax along a permuted axis is itself
    permutation-equivariant); linearity in the aggregated operand fails for any such softmax.
    """
    q, k, v = make_qkv(2, 3, 63, CG, dtype=torch.float64, seed=5)
    q2, _, v2 = make_qkv(2, 3, 63, CG, dtype=torch.float64, seed=6)
    temperature = torch.ones(3, 1, 1, dtype=torch.float64)
    if variant == "davit":
        mix = call(channel_attention, 2 * q - 3 * q2, k, v, variant)
        parts = [call(channel_attention, t, k, v, variant) for t in (q, q2)]
    else:
        mix = call(channel_attention, q, k, 2 * v - 3 * v2, variant, temperature)
        parts = [call(channel_attention, q, k, t, variant, temperature) for t in (v, v2)]
    torch.testing.assert_close(mix, 2 * parts[0] - 3 * parts[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant):
    q, k, v = make_qkv(2, 2, 5, 3, dtype=torch.float64, seed=7, requires_grad=True)
    temperature = torch.tensor([0.7, 1.3], dtype=torch.float64).reshape(2, 1, 1).requires_grad_()
    if variant == "restormer":
        fn = lambda q, k, v, t: channel_attention(q, k, v, normalize=True, temperature=t)  # noqa: E731
        inputs = (q, k, v, temperature)
    elif variant == "davit":
        fn = lambda q, k, v, s: channel_attention(q, k, v, scale=s)  # noqa: E731  learnable scale
        inputs = (q, k, v, temperature)
    else:
        fn = lambda q, k, v: channel_attention(q, k, v, scores="qk")  # noqa: E731
        inputs = (q, k, v)
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradcheck_modules():
    torch.manual_seed(0)
    davit = ChannelAttention(6, 2, qkv_bias=True).double()
    mdta = TransposedAttention(6, 2, bias=True, dwconv=True).double()
    x = torch.randn(1, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(davit, (x,))
    assert torch.autograd.gradcheck(lambda t: mdta(t, (2, 2)), (x,))
    mdta(x, (2, 2)).sum().backward()
    assert mdta.temperature.grad is not None and mdta.temperature.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_forward_close_to_fp32(variant):
    q, k, v = make_qkv(2, 3, 64, CG, dtype=torch.float32, seed=11)
    temperature = torch.full((3, 1, 1), 2.0)
    want = call(channel_attention, q, k, v, variant, temperature)
    got = call(channel_attention, q.bfloat16(), k.bfloat16(), v.bfloat16(), variant, temperature.bfloat16())
    assert got.dtype == torch.bfloat16
    rel = (got.float() - want).norm() / want.norm()
    assert rel < 3e-2, rel
    module = ChannelAttention(3 * CG, 3, qkv_bias=True)
    x = torch.randn(2, 64, 3 * CG)
    want_m = module(x)
    got_m = module.bfloat16()(x.bfloat16()).float()
    assert (got_m - want_m).norm() / want_m.norm() < 3e-2


def test_errors_name_the_argument():
    q, k, v = make_qkv(1, 2, 4, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"q must have shape \[B, G, N, Cg\]"):
        channel_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match=r"k must have the same shape as q"):
        channel_attention(q, k[:, :, :3], v)
    with pytest.raises(
        ValueError, match=r"v must have the same shape as q, \[B, G, N, Cg\] = \[1, 2, 4, 3\]"
    ):
        channel_attention(q, k, v[..., :2])
    with pytest.raises(ValueError, match=r"v must have the same dtype as q"):
        channel_attention(q, k, v.double())
    with pytest.raises(ValueError, match=r"N >= 1"):
        channel_attention(q[:, :, :0], k[:, :, :0], v[:, :, :0])
    with pytest.raises(ValueError, match=r"temperature must broadcast to \[B, G, 1, 1\].*\[2, 1, 1\]"):
        channel_attention(q, k, v, normalize=True, temperature=torch.ones(2))
    with pytest.raises(ValueError, match=r"scale must broadcast to \[B, G, 1, 1\]"):
        channel_attention(q, k, v, scale=torch.ones(3, 1, 1))
    with pytest.raises(ValueError, match=r"scale must be a float"):
        channel_attention(q, k, v, scale="big")
    with pytest.raises(ValueError, match=r"scores must be 'kv'"):
        channel_attention(q, k, v, scores="vq")
    with pytest.raises(ValueError, match=r"dim=10 must be a positive multiple of heads=3"):
        ChannelAttention(10, 3)
    with pytest.raises(ValueError, match=r"dim=10 must be a positive multiple of heads=4"):
        TransposedAttention(10, 4)
    with pytest.raises(ValueError, match=r"x must have shape \[B, N, 6\], got \[1, 4, 5\]"):
        ChannelAttention(6, 2)(torch.randn(1, 4, 5))
    with pytest.raises(ValueError, match=r"size=\(H, W\) .* required when dwconv=True"):
        TransposedAttention(6, 2, dwconv=True)(torch.randn(1, 4, 6))
    with pytest.raises(ValueError, match=r"size must be \(H, W\) with H \* W = N = 4, got \(3, 2\)"):
        TransposedAttention(6, 2, dwconv=True)(torch.randn(1, 4, 6), (3, 2))
