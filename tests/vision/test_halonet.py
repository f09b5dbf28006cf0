"""HaloNet (Vaswani et al., CVPR 2021): halo attention against a per-block loop reference (zero
halo outside the image, stride-2 query subsampling, partial blocks), the separable relative logits
against the pad-and-slice formulation of Bello et al. 2019, core's ``masks.halo`` where the two
agree, the model family's widths, input checks, and the timm-layout checkpoint remap."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from interplay.core.attention import attend, masks
from interplay.core.errors import ConfigError
from interplay.vision.models import MODEL_CFGS, create_model, load_checkpoint
from interplay.vision.models.halonet import HaloAttention, HaloNet, relative_logits_2d


def _halo_loop_reference(attn: HaloAttention, x: torch.Tensor) -> torch.Tensor:
    """Halo attention written out block by block and query by query (Sec. 3.1 of the paper)."""
    b, h, s, win = attn.block_size, attn.halo_size, attn.stride, attn.window
    bq, heads, dqk, dv = attn.query_block, attn.num_heads, attn.dim_head_qk, attn.dim_head_v
    q_map = F.conv2d(x, attn.q.weight, stride=s)  # [B, heads * dqk, Hq, Wq]
    kv_map = F.conv2d(x, attn.kv.weight)
    batch, _, height, width = x.shape
    hq, wq = q_map.shape[-2:]
    out = torch.zeros(batch, heads * dv, hq, wq)
    rel_h, rel_w = attn.pos_embed.height_rel, attn.pos_embed.width_rel
    for n in range(batch):
        for head in range(heads):
            kv = kv_map[n, head * (dqk + dv) : (head + 1) * (dqk + dv)]
            for bi in range(math.ceil(height / b)):
                for bj in range(math.ceil(width / b)):
                    keys, values, places = [], [], []
                    for kx in range(win):
                        for ky in range(win):
                            r, c = bi * b - h + kx, bj * b - h + ky
                            inside = 0 <= r < height and 0 <= c < width
                            vec = kv[:, r, c] if inside else torch.zeros(dqk + dv)  # zero halo
                            keys.append(vec[:dqk])
                            values.append(vec[dqk:])
                            places.append((kx, ky))
                    keys, values = torch.stack(keys), torch.stack(values)
                    for x_ in range(bq):
                        for y_ in range(bq):
                            qr, qc = bi * bq + x_, bj * bq + y_
                            if qr >= hq or qc >= wq:
                                continue  # query of a padded partial block
                            q = q_map[n, head * dqk : (head + 1) * dqk, qr, qc]
                            logits = torch.stack(
                                [
                                    q @ keys[i] / math.sqrt(dqk)
                                    + q @ rel_h[kx - x_ + win - 1]
                                    + q @ rel_w[ky - y_ + win - 1]
                                    for i, (kx, ky) in enumerate(places)
                                ]
                            )
                            out[n, head * dv : (head + 1) * dv, qr, qc] = logits.softmax(0) @ values
    return out


@pytest.mark.parametrize(
    ("stride", "block", "halo", "size"),
    [
        (1, 4, 1, (8, 12)),  # whole blocks
        (1, 4, 2, (6, 9)),  # partial blocks at the bottom/right: zero-padded like the halo
        (2, 4, 1, (8, 8)),  # strided: 2x2 queries per 4x4 block
        (2, 4, 1, (7, 10)),  # strided, odd side: ceil(7 / 2) = 4 query rows
    ],
)
def test_halo_attention_equals_per_block_loop(stride, block, halo, size):
    torch.manual_seed(0)
    attn = HaloAttention(8, 12, stride=stride, num_heads=2, block_size=block, halo_size=halo).eval()
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        got = attn(x)
        want = _halo_loop_reference(attn, x)
    assert got.shape == (2, 12, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _rel_to_abs_1d(q: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Bello et al. 2019 (Attention Augmented Convolutional Networks), App. A: logits against
    relative positions, shifted to absolute window positions by padding and slicing.
    q: [N, L, d] (L queries along one axis), rel: [2W - 1, d] -> [N, L, W]."""
    n, length, _ = q.shape
    r = rel.shape[0]
    win = (r + 1) // 2
    x = q @ rel.T  # [N, L, 2W - 1]
    x = F.pad(x, (0, 1)).flatten(1)  # one zero column per row, then flat
    x = F.pad(x, (0, r - length)).reshape(n, length + 1, r)
    return x[:, :length, win - 1 :]


def test_relative_logits_match_pad_and_slice():
    torch.manual_seed(0)
    bq, win, d = 3, 7, 5
    q = torch.randn(4, bq, bq, d)
    height_rel, width_rel = torch.randn(2 * win - 1, d), torch.randn(2 * win - 1, d)
    got = relative_logits_2d(q, height_rel, width_rel, win).reshape(4, bq, bq, win, win)
    # width: along y for each row x; height: along x for each column y
    lw = _rel_to_abs_1d(q.reshape(4 * bq, bq, d), width_rel).reshape(4, bq, bq, win)  # [N, x, y, ky]
    lh = _rel_to_abs_1d(q.transpose(1, 2).reshape(4 * bq, bq, d), height_rel)
    lh = lh.reshape(4, bq, bq, win).transpose(1, 2)  # [N, x, y, kx]
    torch.testing.assert_close(got, lh[..., :, None] + lw[..., None, :])


def test_no_halo_equals_core_halo_mask_attention():
    # with h = 0 and zero relative tables nothing lies outside the image, so the unfolded blocks
    # must equal core's masks.halo pattern on the flat token sequence
    torch.manual_seed(0)
    attn = HaloAttention(8, 8, num_heads=2, block_size=4, halo_size=0).eval()
    with torch.no_grad():
        attn.pos_embed.height_rel.zero_()
        attn.pos_embed.width_rel.zero_()
    x = torch.randn(1, 8, 8, 12)
    with torch.no_grad():
        got = attn(x)

        def heads(t, d):  # [1, heads * d, H, W] -> [1, heads, H * W, d]
            return t.reshape(1, 2, d, -1).transpose(2, 3)

        q = heads(attn.q(x), 4)
        kv = attn.kv(x).reshape(1, 2, 8, 8, 12)
        k, v = heads(kv[:, :, :4].reshape(1, 8, 8, 12), 4), heads(kv[:, :, 4:].reshape(1, 8, 8, 12), 4)
        out = attend(q, k, v, mask=masks.halo((8, 12), 4, 0), backend="math")
    torch.testing.assert_close(got, out.transpose(2, 3).reshape(1, 8, 8, 12), rtol=1e-5, atol=1e-6)


def test_family_widths_values_only_widen():
    with torch.device("meta"):
        h5 = create_model("halonet_h5")
    block = h5.layer3[1]
    # m = 256: q and k keep m, values r_v m = 640, output r_b m = 512
    assert block.conv1.out_channels == 256
    assert block.conv2.q.out_channels == 256 and block.conv2.kv.out_channels == 256 + 640
    assert block.conv3.in_channels == 640 and block.conv3.out_channels == 512
    assert (block.conv2.block_size, block.conv2.halo_size, block.conv2.window) == (14, 2, 18)
    assert h5.num_features == 1536 and h5.head.fc.in_features == 1536
    assert [h5.layer1[0].conv2.stride, h5.layer2[0].conv2.stride, h5.layer2[1].conv2.stride] == [1, 2, 1]


def test_input_checks():
    model = create_model("halonet_h0", num_classes=3)
    with pytest.raises(ConfigError, match="halonet_h0"):
        model(torch.randn(3, 64, 64))
    model.strict_size = True
    with pytest.raises(ConfigError, match="halonet_h0.*256"):
        model(torch.randn(1, 3, 64, 64))
    model.strict_size = False
    with pytest.raises(ConfigError):
        HaloAttention(12, num_heads=8)
    with pytest.raises(ConfigError):
        HaloAttention(16, num_heads=8, block_size=5, stride=2)
    # padded mode: any size; stage maps are ceil(size / reduction)
    model.eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 72, 40))
    assert [m.shape[-2:] for m in maps] == [(18, 10), (9, 5), (5, 3), (3, 2)]


def _to_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> timm ByobNet's (byoanet halonet_h*): the layout the filter maps back."""
    block = {
        "conv1.": "conv1_1x1.conv.",
        "bn1.": "conv1_1x1.bn.",
        "conv2.": "self_attn.",
        "bn2.": "post_attn.",
        "conv3.": "conv3_1x1.conv.",
        "bn3.": "conv3_1x1.bn.",
        "downsample.0.": "shortcut.conv.conv.",
        "downsample.1.": "shortcut.conv.bn.",
    }
    out = {}
    for key, value in state.items():
        if key.startswith("layer"):
            stage, index, rest = key.split(".", 2)
            prefix = next(p for p in block if rest.startswith(p))
            key = f"stages.{int(stage[5:]) - 1}.{index}.{block[prefix]}{rest.removeprefix(prefix)}"
        elif key.startswith(("conv1.", "bn1.")):
            key = "stem.conv1." + ("conv." if key.startswith("conv1.") else "bn.") + key.split(".", 1)[1]
        elif key.startswith("final_conv."):
            idx, rest = key.removeprefix("final_conv.").split(".", 1)
            key = f"final_conv.{'conv' if idx == '0' else 'bn'}.{rest}"
        out[key] = value.clone()
    return out


def test_timm_layout_checkpoint_loads(tmp_path):
    from safetensors.torch import save_file

    filter_fn = MODEL_CFGS["halonet_h3"]["checkpoint_filter_fn"]
    # a narrow, shallow H3-shaped net (b 10, h 3, r_b 1.5, d_f): every kind of key, few parameters
    kwargs = dict(
        block_size=10,
        halo_size=3,
        value_ratio=1.0,
        out_ratio=1.5,
        l3=1,
        final_chs=64,
        num_classes=5,
        widths=(16, 32, 64, 128),
    )
    torch.manual_seed(0)
    source = HaloNet(**kwargs)
    state = _to_timm_layout(source.state_dict())
    for key in (
        "stem.conv1.conv.weight",
        "stages.2.0.self_attn.pos_embed.height_rel",
        "stages.1.0.shortcut.conv.bn.running_var",
        "stages.0.1.post_attn.weight",
        "final_conv.bn.bias",
    ):
        assert key in state, key
    path = tmp_path / "halonet.safetensors"
    save_file(state, str(path))
    torch.manual_seed(1)
    model = HaloNet(**kwargs)
    load_checkpoint(model, path, filter_fn=filter_fn, num_classes=5)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), source.eval()(x))
