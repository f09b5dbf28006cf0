"""ECA-Net (Wang et al., CVPR 2020): the kernel-size rule (Eq. 12), the module against its equation
computed by loops, its place in the bottleneck, the released kernel sizes, and the released
checkpoint layouts (ECA-ResNet, ECA-MobileNetV2) loading through the key remap."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from interplay.core.errors import ConfigError, DataError
from interplay.vision.models import MODEL_CFGS, create_model, load_checkpoint
from interplay.vision.models.eca import EfficientChannelAttention, eca_kernel_size, eca_resnet


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        # log2(C)/2 + 1/2 -> nearest odd (at least 3)
        (4, 3),  # 1.5 -> 3 (minimum)
        (16, 3),  # 2.5
        (64, 3),  # 3.5
        (96, 3),  # 3.79
        (128, 5),  # 4.0 -> 5
        (256, 5),  # 4.5
        (512, 5),  # 5.0
        (1024, 5),  # 5.5
        (2048, 7),  # 6.0 -> 7
        (1 << 14, 7),  # 7.5
        (1 << 15, 9),  # 8.0 -> 9
    ],
)
def test_adaptive_kernel_size_by_hand(channels, expected):
    assert eca_kernel_size(channels) == expected


def test_kernel_size_with_other_gamma_and_beta():
    # |log2(C)/gamma + b/gamma|_odd with gamma = 1, b = 0: log2(64) = 6 -> 7
    assert eca_kernel_size(64, gamma=1.0, beta=0.0) == 7
    with pytest.raises(ConfigError):
        eca_kernel_size(0)
    with pytest.raises(ConfigError):
        EfficientChannelAttention(kernel_size=4)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_eca_equals_its_equation_by_loops(kernel_size):
    torch.manual_seed(0)
    eca = EfficientChannelAttention(channels=11, kernel_size=kernel_size)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.randn(1, 1, kernel_size))
    x = torch.randn(2, 11, 5, 3)
    w = eca.conv.weight.view(-1).tolist()
    pad = (kernel_size - 1) // 2
    want = torch.empty_like(x)
    for b in range(x.shape[0]):
        y = [x[b, c].mean().item() for c in range(x.shape[1])]  # GAP
        for c in range(x.shape[1]):
            z = sum(w[j] * y[c + j - pad] for j in range(kernel_size) if 0 <= c + j - pad < len(y))
            want[b, c] = x[b, c] / (1 + math.exp(-z))
    torch.testing.assert_close(eca(x), want, rtol=1e-5, atol=1e-6)


def test_eca_resnet_kernel_sizes_and_module_position():
    model = create_model("eca_resnet50", num_classes=3)
    per_stage = [{b.channel_attn.kernel_size for b in stage} for stage in model.stages]
    assert per_stage == [{3}, {5}, {5}, {7}]  # the released eca_resnet50_k3557
    r101 = create_model("eca_resnet101", num_classes=3)
    assert [{b.channel_attn.kernel_size for b in s} for s in r101.stages] == [{3}, {3}, {5}, {7}]
    adaptive = create_model("eca_resnet50", num_classes=3, eca_kernel_sizes="adaptive")
    # Eq. 12 on the bottleneck outputs 256, 512, 1024, 2048
    assert [s[0].channel_attn.kernel_size for s in adaptive.stages] == [5, 5, 5, 7]
    with pytest.raises(ConfigError):
        create_model("eca_resnet50", eca_kernel_sizes=(3, 5))

    # ECA gates the residual branch after bn3, before the addition (released ECABottleneck)
    block = model.layer2[0].eval()
    with torch.no_grad():
        block.channel_attn.conv.weight.normal_()
        x = torch.randn(2, 256, 8, 8)
        out = F.relu(block.bn1(block.conv1(x)))
        out = F.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
        gate = torch.sigmoid(F.conv1d(out.mean((2, 3))[:, None], block.channel_attn.conv.weight, padding=2))
        want = F.relu(out * gate[:, 0, :, None, None] + block.downsample(x))
        torch.testing.assert_close(block(x), want)


def test_eca_mobilenetv2_kernel_sizes():
    model = create_model("eca_mobilenetv2", num_classes=3)
    sizes = [(blk.conv[-1].kernel_size, blk.conv[-2].num_features) for blk in model.features[1:18]]
    # released code: k = 1 where the block's output has <= 96 channels, 3 above
    assert all(k == (1 if c <= 96 else 3) for k, c in sizes)
    assert [k for k, _ in sizes].count(3) == 4


def _official_resnet_state(model) -> dict[str, torch.Tensor]:
    """Our state dict renamed to the released ECA-ResNet layout, saved as DataParallel does."""
    out = {}
    for key, value in model.state_dict().items():
        key = key.replace(".channel_attn.", ".eca.")
        key = key.removeprefix("head.")
        out["module." + key] = value.clone()
    return out


def test_official_eca_resnet_checkpoint_loads(tmp_path):
    # the remap is per layer name: a one-block-per-stage ECA-ResNet keeps the test small
    filter_fn = MODEL_CFGS["eca_resnet50"]["checkpoint_filter_fn"]
    torch.manual_seed(0)
    source = eca_resnet((1, 1, 1, 1), (3, 5, 5, 7), num_classes=5)
    state = _official_resnet_state(source)
    assert "module.layer1.0.eca.conv.weight" in state and "module.fc.weight" in state
    assert "module.layer2.0.downsample.0.weight" in state and "module.layer2.0.conv2.weight" in state
    path = tmp_path / "eca_resnet_k3557.pth.tar"
    torch.save({"state_dict": state, "epoch": 100}, path)

    torch.manual_seed(1)
    model = eca_resnet((1, 1, 1, 1), (3, 5, 5, 7), num_classes=5)
    load_checkpoint(model, path, filter_fn=filter_fn, num_classes=5)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    # fine-tuning to another class count keeps everything but the classifier
    model10 = eca_resnet((1, 1, 1, 1), (3, 5, 5, 7), num_classes=10)
    load_checkpoint(model10, path, filter_fn=filter_fn, num_classes=10)
    torch.testing.assert_close(
        model10.layer4[0].channel_attn.conv.weight, source.layer4[0].channel_attn.conv.weight
    )
    # the adaptive kernels (5, 5, 5, 7) cannot take the released k = 3 of stage 1
    with pytest.raises(DataError, match="channel_attn"):
        load_checkpoint(eca_resnet((1, 1, 1, 1), "adaptive", num_classes=5), path, filter_fn=filter_fn)
    # the registered model reads such a file by itself (pretrained_file) with its filter
    assert MODEL_CFGS["eca_resnet101"]["checkpoint_filter_fn"] is filter_fn


def test_official_eca_mobilenetv2_checkpoint_loads(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_model("eca_mobilenetv2")
    state = {k.replace("head.fc.", "classifier.1."): v.clone() for k, v in source.state_dict().items()}
    assert "features.2.conv.4.conv.weight" in state  # expand, dw, project, bn, eca: the released names
    path = tmp_path / "eca_mobilenetv2_k13.safetensors"
    save_file(state, str(path))
    model = create_model("eca_mobilenetv2", pretrained_file=path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)


@pytest.mark.parametrize("name", ["eca_resnet50", "eca_mobilenetv2", "resnet50"])
def test_bad_input_is_a_config_error_naming_the_model(name):
    model = create_model(name, num_classes=3)
    with pytest.raises(ConfigError, match=name):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match=name):
        model(torch.randn(1, 1, 32, 32))
