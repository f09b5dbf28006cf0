"""CAS-ViT: the additive token mixer against its equations written out by hand, the block's three
residuals, the averaged distillation head, input checks and the official checkpoint remap."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from interplay.core.errors import ConfigError
from interplay.vision.models import create_model, load_checkpoint
from interplay.vision.models.casvit import (
    AdditiveBlock,
    AdditiveTokenMixer,
    CASViT,
    ChannelOperation,
    SpatialOperation,
    checkpoint_filter_fn,
)


def _randomise(module):
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.eval()


def _dw3(x, conv):
    return F.conv2d(x, conv.weight, conv.bias, padding=1, groups=x.shape[1])


def _bn(x, bn):
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt() * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def spatial_reference(op: SpatialOperation, t):
    dw, bn, conv = op.block[0], op.block[1], op.block[3]
    s = torch.relu(_bn(_dw3(t, dw), bn))
    logits = torch.einsum("c,bchw->bhw", conv.weight[0, :, 0, 0], s)[:, None]  # C -> 1, no bias
    return t * torch.sigmoid(logits)


def channel_reference(op: ChannelOperation, t):
    pooled = t.mean(dim=(2, 3))  # GAP
    gate = torch.sigmoid(pooled @ op.block[1].weight[:, :, 0, 0].T)  # Conv1x1 on [B, C, 1, 1], no bias
    return t * gate[:, :, None, None]


def catm_reference(m: AdditiveTokenMixer, x):
    qkv = torch.einsum("oi,bihw->bohw", m.qkv.weight[:, :, 0, 0], x)
    q, k, v = qkv.split(x.shape[1], dim=1)
    phi_q = channel_reference(m.oper_q[1], spatial_reference(m.oper_q[0], q))
    phi_k = channel_reference(m.oper_k[1], spatial_reference(m.oper_k[0], k))
    return _dw3(_dw3(phi_q + phi_k, m.dwc) * v, m.proj)


def test_spatial_and_channel_operations_match_their_equations():
    x = torch.randn(2, 12, 7, 5)
    s = _randomise(SpatialOperation(12))
    c = _randomise(ChannelOperation(12))
    torch.testing.assert_close(s(x), spatial_reference(s, x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c(x), channel_reference(c, x), rtol=1e-4, atol=1e-5)
    # the spatial gate is one map shared by all channels; the channel gate one scalar per channel
    assert s.block[3].weight.shape == (1, 12, 1, 1) and s.block[3].bias is None
    assert c.block[1].weight.shape == (12, 12, 1, 1) and c.block[1].bias is None


def test_additive_token_mixer_matches_its_equation():
    m = _randomise(AdditiveTokenMixer(16))
    assert m.qkv.bias is None
    x = torch.randn(2, 16, 6, 8)
    torch.testing.assert_close(m(x), catm_reference(m, x), rtol=1e-4, atol=1e-5)
    # q and k have their own context operations (not shared weights)
    assert m.oper_q[0].block[0].weight.data_ptr() != m.oper_k[0].block[0].weight.data_ptr()


def test_block_is_three_residuals():
    blk = _randomise(AdditiveBlock(16))
    x = torch.randn(2, 16, 5, 5)
    y = x + blk.local_perception(x)
    y = y + blk.attn(_bn(y, blk.norm1))
    y = y + blk.mlp(_bn(y, blk.norm2))
    torch.testing.assert_close(blk(x), y, rtol=1e-4, atol=1e-5)
    names = [type(m).__name__ for m in blk.local_perception.network]
    assert names == ["Conv2d", "BatchNorm2d", "Conv2d", "GELU", "Conv2d"]


@pytest.mark.parametrize("training", [False, True])
def test_forward_averages_head_and_distillation_head(training):
    torch.manual_seed(0)
    model = CASViT(depths=(1, 1, 1, 1), dims=(16, 16, 32, 32), num_classes=5)
    torch.nn.init.normal_(model.head_dist.weight)  # make the two heads differ
    model.train(training)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    want = (model.head.fc(pooled) + model.head_dist(pooled)) / 2
    torch.testing.assert_close(out, want)
    assert not torch.allclose(model.head.fc(pooled), model.head_dist(pooled))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.head_dist.out_features == 3


def test_without_distillation_head():
    model = CASViT(depths=(1, 1, 1, 1), dims=(16, 16, 32, 32), num_classes=5, distillation=False).eval()
    assert model.head_dist is None
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x), model.head.fc(model.forward_head(model.forward_features(x), True)))


def test_parameter_counts_include_the_distillation_head():
    with torch.device("meta"):
        with_dist = CASViT((2, 2, 4, 2), (48, 56, 112, 220))
        without = CASViT((2, 2, 4, 2), (48, 56, 112, 220), distillation=False)
    n = sum(p.numel() for p in with_dist.parameters())
    assert n - sum(p.numel() for p in without.parameters()) == 220 * 1000 + 1000
    assert abs(n - 3.20e6) / 3.20e6 < 0.005


def test_input_checks_name_the_model():
    model = create_model("casvit_xs", num_classes=3)
    with pytest.raises(ConfigError, match="casvit_xs"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="input channels"):
        model(torch.randn(1, 1, 32, 32))
    assert model.eval()(torch.randn(1, 3, 50, 38)).shape == (1, 3)  # padded convs: any size runs


def test_official_checkpoint_remap(tmp_path):
    torch.manual_seed(0)
    model = _randomise(CASViT(depths=(1, 2, 1, 1), dims=(16, 24, 32, 40), num_classes=5))

    def to_official(key):
        if key.startswith("stages."):
            _, stage, part, rest = key.split(".", 3)
            stage = int(stage)
            if part == "blocks":
                return f"network.{2 * stage}.{rest}"
            return f"network.{2 * stage - 1}.{rest}"
        return key.replace("head.fc.", "head.").replace("head_dist.", "dist_head.")

    official = {to_official(k): v.clone() for k, v in model.state_dict().items()}
    assert "network.2.1.attn.oper_q.0.block.3.weight" in official  # stage 1, block 1
    assert "network.3.proj.weight" in official  # down-sampling into stage 2
    assert "dist_head.weight" in official and "head.weight" in official
    path = tmp_path / "rcvit.pth"
    torch.save({"model": official}, path)

    reloaded = CASViT(depths=(1, 2, 1, 1), dims=(16, 24, 32, 40), num_classes=5).eval()
    load_checkpoint(reloaded, path, filter_fn=checkpoint_filter_fn)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(reloaded(x), model(x))
