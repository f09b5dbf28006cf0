"""HorNet: g^n Conv against a direct loop of its recursion, its channel split rule and degree, the
global filter against a circular convolution, input checks and the official checkpoint remap."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from interplay.core.errors import ConfigError
from interplay.vision.models import count_parameters, create_model, load_checkpoint
from interplay.vision.models.hornet import (
    GlobalLocalFilter,
    GnConv,
    HorNet,
    checkpoint_filter_fn,
    gnconv_dims,
)


def _conv1x1(x, conv):
    return torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[None, :, None, None]


def _depthwise_loop(x, weight, bias):
    """Per-channel 2-D correlation, zero padding, written out without grouped convolutions."""
    c, _, k, _ = weight.shape
    pad = k // 2
    xp = F.pad(x, [pad] * 4)
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            out += xp[:, :, i : i + h, j : j + w] * weight[None, :, 0, i, j, None, None]
    return out + bias[None, :, None, None]


def gnconv_reference(m: GnConv, x):
    """p_0, q = split(proj_in x); q_k = split(DW(q) * s); p_{k+1} = pw_k(p_k) * q_k; out = proj_out(p_n)."""
    n, dim = m.order, x.shape[1]
    dims = [dim // 2 ** (n - 1 - k) for k in range(n)]
    y = _conv1x1(x, m.proj_in)
    p, q = y[:, : dims[0]], y[:, dims[0] :]
    q = _depthwise_loop(q, m.dwconv.weight, m.dwconv.bias) * m.scale
    gates, start = [], 0
    for d in dims:
        gates.append(q[:, start : start + d])
        start += d
    p = p * gates[0]
    for k in range(1, n):
        p = _conv1x1(p, m.pws[k - 1]) * gates[k]
    return _conv1x1(p, m.proj_out)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_gnconv_matches_its_recursion(order):
    torch.manual_seed(order)
    dim = 32
    m = GnConv(dim, order, scale=1 / 3)
    for p in m.parameters():  # non-trivial biases too
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, dim, 9, 7)
    torch.testing.assert_close(m(x), gnconv_reference(m, x), rtol=1e-4, atol=1e-5)
    assert m.dims == [dim // 2 ** (order - 1 - k) for k in range(order)]
    assert sum(m.dims) + m.dims[0] == 2 * dim  # proj_in's 2C channels are exactly p_0 and q


def test_gnconv_channel_rule_and_order_is_the_interaction_degree():
    assert gnconv_dims(64, 2) == [32, 64]
    assert gnconv_dims(256, 4) == [32, 64, 128, 256]
    assert gnconv_dims(512, 5) == [32, 64, 128, 256, 512]
    with pytest.raises(ValueError):
        gnconv_dims(36, 4)
    # without biases, p_n is a product of n + 1 linear maps of x: homogeneous of degree n + 1
    torch.manual_seed(0)
    x = torch.randn(1, 16, 6, 6)
    for order in (2, 3, 4):
        m = GnConv(16, order)
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                torch.nn.init.zeros_(p)
        torch.testing.assert_close(m(2 * x), 2 ** (order + 1) * m(x), rtol=1e-4, atol=1e-6)


def test_global_filter_is_a_circular_convolution_and_interleaves_channels():
    torch.manual_seed(0)
    dim, h, w = 8, 6, 5
    gf = GlobalLocalFilter(dim, h=h, w=w // 2 + 1)
    g = torch.randn(dim // 2, h, w)  # a real spatial kernel; W = rfft2(g) unnormalised
    with torch.no_grad():
        gf.complex_weight.copy_(torch.view_as_real(torch.fft.rfft2(g)))
        gf.pre_norm.weight.normal_()
        gf.post_norm.weight.normal_()
    x = torch.randn(2, dim, h, w)
    got = gf(x)

    z = gf.pre_norm(x)
    local, glob = z[:, : dim // 2], z[:, dim // 2 :]
    local = F.conv2d(local, gf.dw.weight, padding=1, groups=dim // 2)
    circ = torch.zeros_like(glob)
    for a in range(h):
        for b in range(w):
            # (x (*) g)[i, j] = sum_{a, b} x[i - a, j - b] g[a, b] (indices mod h, w)
            circ += torch.roll(glob, shifts=(a, b), dims=(2, 3)) * g[None, :, a, b, None, None]
    mixed = torch.empty_like(z)
    mixed[:, 0::2], mixed[:, 1::2] = local, circ  # released order: local_0, global_0, local_1, ...
    torch.testing.assert_close(got, gf.post_norm(mixed), rtol=1e-4, atol=1e-4)


def test_global_filter_resizes_to_other_grids():
    gf = GlobalLocalFilter(8, h=14, w=8)
    assert gf(torch.randn(1, 8, 7, 7)).shape == (1, 8, 7, 7)
    assert gf.filter_weight(14, 8).shape == (4, 14, 8)
    assert gf.filter_weight(3, 2).shape == (4, 3, 2)


def test_gf_models_use_the_filter_in_stages_3_and_4_only():
    model = HorNet(base_dim=16, depths=(1, 1, 1, 1), global_filters=(None, None, (14, 8), (7, 4)))
    kinds = [type(s[0].gnconv.dwconv).__name__ for s in model.stages]
    assert kinds == ["Conv2d", "Conv2d", "GlobalLocalFilter", "GlobalLocalFilter"]
    assert [s[0].gnconv.order for s in model.stages] == [2, 3, 4, 5]
    assert tuple(model.stages[2][0].gnconv.dwconv.complex_weight.shape) == (
        sum(gnconv_dims(64, 4)) // 2,
        14,
        8,
        2,
    )


def test_block_layer_scale_starts_at_1e_6():
    model = HorNet(base_dim=16, depths=(1, 1, 1, 1))
    block = model.stages[0][0]
    assert torch.all(block.gamma1 == 1e-6) and torch.all(block.gamma2 == 1e-6)


def test_input_checks_name_the_model():
    model = create_model("hornet_tiny_7x7", num_classes=3)
    with pytest.raises(ConfigError, match="hornet_tiny_7x7"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 40))


def test_official_checkpoint_remap(tmp_path):
    torch.manual_seed(0)
    model = HorNet(
        base_dim=16, depths=(1, 1, 2, 1), global_filters=(None, None, (14, 8), (7, 4)), num_classes=5
    )
    official = {}
    for key, value in model.state_dict().items():
        key = key.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        official[key] = value.clone()
    assert "norm.weight" in official and "head.weight" in official
    assert "stages.2.0.gnconv.dwconv.complex_weight" in official
    assert "downsample_layers.0.1.weight" in official
    path = tmp_path / "hornet.pth"
    torch.save({"model": official}, path)

    torch.manual_seed(1)
    reloaded = HorNet(
        base_dim=16, depths=(1, 1, 2, 1), global_filters=(None, None, (14, 8), (7, 4)), num_classes=5
    )
    load_checkpoint(reloaded, path, filter_fn=checkpoint_filter_fn)
    x = torch.randn(2, 3, 64, 64)
    model.eval(), reloaded.eval()
    torch.testing.assert_close(reloaded(x), model(x))


def test_tiny_gf_parameter_difference_is_exactly_the_filter_layers():
    """Per GF block (C' = sum of the gnConv dims): minus the 7x7 DW conv (49 C' + C'), plus a 3x3 DW
    conv without bias on C'/2 channels, the complex filter (C'/2 x h x w x 2) and two LayerNorms (4 C')."""
    with torch.device("meta"):
        seven = create_model("hornet_tiny_7x7")
        gf = create_model("hornet_tiny_gf")
    want = 0
    for dim, order, depth, (h, w) in ((256, 4, 18, (14, 8)), (512, 5, 2, (7, 4))):
        c = sum(gnconv_dims(dim, order))
        want += depth * (-(49 * c + c) + 9 * c // 2 + c // 2 * h * w * 2 + 4 * c)
    assert count_parameters(gf) - count_parameters(seven) == want


def test_construction_initialises_everything():
    """Built on the meta device then materialised: norms at identity, no uninitialised memory."""
    torch.manual_seed(0)
    model = HorNet(base_dim=16, depths=(1, 1, 1, 1), global_filters=(None, None, (14, 8), (7, 4)))
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert m.bias is None or torch.all(m.bias == 0)
            assert 0.01 < m.weight.std() < 0.03 or m.weight.numel() < 50
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"
