"""FFNet: fuse() re-parameterisation (outputs unchanged, fused parameter counts = the paper's), each
fusable layer against its unfused form, the FFNified token mixer's equation, the closed-form
fusion overhead used for the registered counts, input checks and the checkpoint remap."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from interplay.core.errors import ConfigError
from interplay.vision.models import MODEL_CFGS, count_parameters, create_model, load_checkpoint
from interplay.vision.models.ffnet import (
    FFNET_CFGS,
    FUSED_PAPER_PARAMS,
    BNConvSkip,
    ConvBN,
    FFNet,
    RepDW,
    TokenMixer,
    checkpoint_filter_fn,
    fusion_overhead,
)

SMALL = dict(
    depths=(1, 2, 2, 1),
    dims=(8, 16, 32, 64),
    in_dim=8,
    kernel_sizes=(3, 7, 3, 7),  # both channel-mixer forms (3x3 Conv-BN and 7x7 RepDW)
    layer_scale_init_value=0.5,
    num_classes=5,
)


def _randomise_bn(module, seed=0):
    """Non-trivial BN statistics and affine parameters, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return module.eval()


def test_conv_bn_and_repdw_fuse_exactly():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 11, 9)
    cb = _randomise_bn(ConvBN(6, 6, 3, 1, 1, groups=6))
    torch.testing.assert_close(cb.fuse()(x), cb(x), rtol=1e-5, atol=1e-5)
    # stride-2 channel-doubling depth-wise pair as in patch merging: the 3x3 sits centred in the 7x7
    rep = _randomise_bn(RepDW(6, 12, 7, stride=2))
    fused = rep.fuse()
    assert fused.kernel_size == (7, 7) and fused.groups == 6 and fused.stride == (2, 2)
    torch.testing.assert_close(fused(x), rep(x), rtol=1e-5, atol=1e-5)


def test_merging_skip_fuses_into_one_1x1():
    torch.manual_seed(0)
    skip = _randomise_bn(BNConvSkip(8))
    x = torch.randn(2, 8, 5, 5)
    bn, conv = skip.conv.bn, skip.conv.c
    hand = x + F.conv2d(
        F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps), conv.weight
    )
    torch.testing.assert_close(skip(x), hand)
    torch.testing.assert_close(skip.fuse()(x), hand, rtol=1e-5, atol=1e-5)


def test_token_mixer_is_ffnified_attention():
    """DW_{k2}(GELU(DW_{k1}(BN(Conv1x1 x)))) with 7x7 = 7x7-BN + 3x3-BN branches."""
    torch.manual_seed(0)
    tm = _randomise_bn(TokenMixer(8, 7, 3))
    x = torch.randn(2, 8, 9, 9)

    def bn(y, m):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, eps=m.eps)

    y = bn(F.conv2d(x, tm.fc.c.weight), tm.fc.bn)
    big, small = tm.conv1.conv, tm.conv1.conv1
    y = bn(F.conv2d(y, big.c.weight, padding=3, groups=8), big.bn) + bn(
        F.conv2d(y, small.c.weight, padding=1, groups=8), small.bn
    )
    y = F.conv2d(F.gelu(y), tm.conv2.weight, tm.conv2.bias, padding=1, groups=8)
    torch.testing.assert_close(tm(x), y, rtol=1e-5, atol=1e-5)


def test_fuse_leaves_outputs_unchanged():
    torch.manual_seed(0)
    model = _randomise_bn(FFNet(**SMALL))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        stages_before = model.forward_intermediates(x)
    n_before = count_parameters(model)
    model.fuse()
    assert model.fused and not model.training
    kinds = {type(m).__name__ for m in model.modules()}
    assert not kinds & {"ConvBN", "RepDW", "BNConv", "BNConvSkip"}
    # only the final BN (before pooling) is left
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
        for got, want in zip(model.forward_intermediates(x), stages_before, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert n_before - count_parameters(model) == fusion_overhead(**SMALL)


@pytest.mark.parametrize("name", ["ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"])
def test_fused_parameter_count_matches_the_paper(name):
    """The published counts are of the fused network; the registered ``paper_params`` (training form,
    what the zoo sweep checks) is that plus the closed-form fusion overhead."""
    torch.manual_seed(0)
    model = create_model(name)
    unfused = count_parameters(model)
    model.fuse()
    fused = count_parameters(model)
    ref = FUSED_PAPER_PARAMS[name]
    assert abs(fused - ref) / ref < 0.005, f"{name}: fused {fused / 1e6:.3f}M vs {ref / 1e6:.1f}M"
    assert unfused - fused == fusion_overhead(**FFNET_CFGS[name])
    assert MODEL_CFGS[name]["paper_params"] == ref + fusion_overhead(**FFNET_CFGS[name])
    if name == "ffnet_1":  # a released model end to end: fused == unfused on an image
        fresh = _randomise_bn(create_model(name))
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            want = fresh(x)
            torch.testing.assert_close(fresh.fuse()(x), want, rtol=1e-4, atol=1e-4)


def test_released_kernel_layout():
    ffnet1, ffnet2 = (
        FFNet(**FFNET_CFGS["ffnet_1"]),
        FFNet(**{**FFNET_CFGS["ffnet_2"], "depths": (1, 1, 1, 1)}),
    )
    block1 = ffnet1.stages[2][1]
    assert isinstance(block1.channel_mixer.main.conv, ConvBN)  # FFNet-1: 3x3 Conv-BN channel mixer
    assert isinstance(block1.token_mixer[0].main.conv1, RepDW)  # stages 3-4: 7x7 token mixer
    assert isinstance(ffnet1.stages[0][0].token_mixer[0].main.conv1, torch.nn.Conv2d)  # stages 1-2: 3x3
    assert isinstance(ffnet2.stages[0][0].channel_mixer.main.conv, RepDW)  # FFNet-2..4: 7x7 everywhere
    assert block1.channel_mixer.main.fc1.out_channels == 3 * 320
    assert ffnet1.stages[0][0].channel_mixer.layer_scale is None
    ffnet3 = FFNet(**{**FFNET_CFGS["ffnet_3"], "depths": (1, 1, 1, 1)})
    assert torch.all(ffnet3.stages[0][0].channel_mixer.layer_scale == 1e-6)
    # built on the meta device then materialised: every BN at identity, nothing uninitialised
    for m in ffnet3.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
    assert all(torch.isfinite(p).all() for p in ffnet3.parameters())


def test_any_input_size_runs():
    model = FFNet(**SMALL).eval()
    assert model(torch.randn(1, 3, 50, 38)).shape == (1, 5)


def test_input_checks_name_the_model():
    model = create_model("ffnet_1", num_classes=3)
    with pytest.raises(ConfigError, match="ffnet_1"):
        model(torch.randn(3, 32, 32))


def test_official_checkpoint_remap(tmp_path):
    torch.manual_seed(0)
    model = _randomise_bn(FFNet(**SMALL))
    official = {k.replace("head.fc.", "head."): v.clone() for k, v in model.state_dict().items()}
    assert "stages.1.0.proj.0.conv1.c.weight" in official  # merging, 3x3 branch
    assert "stages.1.1.token_mixer.0.main.fc.bn.running_var" in official
    assert "stages.1.1.channel_mixer.layer_scale" in official
    assert "head.weight" in official and "norm.weight" in official
    path = tmp_path / "ffnet.pth"
    torch.save({"model": official}, path)
    reloaded = FFNet(**SMALL).eval()
    load_checkpoint(reloaded, path, filter_fn=checkpoint_filter_fn)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(reloaded(x), model(x))
