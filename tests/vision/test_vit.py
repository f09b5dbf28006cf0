"""Plain ViT (Dosovitskiy et al., ICLR 2021): attention against a per-head loop, exact attention maps,
prompt tokens and masks, position-embedding resampling, checkpoint remapping (timm and Hugging Face
layouts), input checks and the FLOP count of one block against its closed form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from interplay.core.errors import ConfigError
from interplay.vision.models import count_gmacs, create_model
from interplay.vision.models.vit import (
    Attention,
    VisionTransformer,
    checkpoint_filter_fn,
    resample_pos_embed,
)


def _tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dict(img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=3, mlp_ratio=2.0, num_classes=5)
    return VisionTransformer(**{**cfg, **kw}).eval()


def _images(b: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_attention_matches_a_per_head_loop():
    torch.manual_seed(0)
    attn = Attention(12, num_heads=3).eval()
    x = torch.randn(2, 7, 12)
    out = attn(x)
    qkv = attn.qkv(x)
    heads = []
    for h in range(3):
        q = qkv[..., h * 4 : (h + 1) * 4]
        k = qkv[..., 12 + h * 4 : 12 + (h + 1) * 4]
        v = qkv[..., 24 + h * 4 : 24 + (h + 1) * 4]
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ v)
    want = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    # the exact-probabilities path gives the same output
    out2, probs = attn(x, return_attention=True)
    torch.testing.assert_close(out2, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 7))


def test_attention_maps_are_exact_and_consistent_with_forward():
    model = _tiny()
    x = _images()
    maps = model.get_attention_maps(x)
    assert len(maps) == 3 and maps[0].shape == (2, 3, 17, 17)
    # block 0's map from the embedded tokens by hand
    z0 = model.prepare_tokens(x)
    blk = model.blocks[0]
    q, k, _ = blk.attn.qkv(blk.norm1(z0)).reshape(2, 17, 3, 3, 8).permute(2, 0, 3, 1, 4)
    want = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(maps[0], want, rtol=1e-5, atol=1e-6)
    # running the blocks through the probability path reproduces forward_features
    z = z0
    for b in model.blocks:
        z, _ = b(z, None, True)
    torch.testing.assert_close(model.norm(z), model.forward_features(x), rtol=1e-5, atol=1e-5)


def test_forward_intermediates_are_the_blocks_patch_tokens():
    model = _tiny()
    x = _images()
    z = model.prepare_tokens(x)
    outs = []
    for b in model.blocks:
        z = b(z)
        outs.append(z[:, 1:].transpose(1, 2).reshape(2, 24, 4, 4))
    got = model.forward_intermediates(x, indices=[0, -1])
    torch.testing.assert_close(got[0], outs[0])
    torch.testing.assert_close(got[1], outs[2])
    assert [f.reduction for f in model.feature_info] == [4, 4, 4]
    normed = model.forward_intermediates(x, indices=[2], norm=True)[0]
    torch.testing.assert_close(normed, model.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, 24, 4, 4))


def test_prompt_tokens_hidden_by_the_mask_change_nothing():
    model = _tiny()
    x = _images()
    base = model.forward_features(x)  # [2, 17, 24]
    prompts = torch.randn(1, 2, 24)
    n = 17 + 2
    hidden = torch.ones(n, n, dtype=torch.bool)
    hidden[:17, 17:] = False  # class and patch tokens do not see the prompts
    shallow = model.forward_features(x, extra_tokens=prompts, attn_mask=hidden)
    assert shallow.shape == (2, 19, 24)
    torch.testing.assert_close(shallow[:, :17], base, rtol=1e-5, atol=1e-5)
    deep = model.forward_features(x, extra_tokens=[prompts, None, torch.randn(1, 2, 24)], attn_mask=hidden)
    torch.testing.assert_close(deep[:, :17], base, rtol=1e-5, atol=1e-5)
    # when the class token may read the prompts, its output changes and the patches' does not
    cls_sees = hidden.clone()
    cls_sees[0, 17:] = True
    out = model.forward_features(x, extra_tokens=prompts, attn_mask=[cls_sees, hidden, hidden])
    assert not torch.allclose(out[:, 0], base[:, 0], atol=1e-4)
    maps = model.get_attention_maps(x, extra_tokens=prompts, attn_mask=cls_sees)
    assert maps[0].shape == (2, 3, 19, 19)
    assert torch.all(maps[0][:, :, 1:17, 17:] == 0) and torch.all(maps[0][:, :, 0, 17:] > 0)
    with pytest.raises(ConfigError, match="3 blocks"):
        model.forward_features(x, extra_tokens=[prompts])


def test_pos_embed_resampling():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pos, (4, 4)) is pos
    const = torch.cat([torch.randn(1, 1, 8), torch.ones(1, 16, 8) * 3.0], dim=1)
    up = resample_pos_embed(const, (6, 6))
    assert up.shape == (1, 37, 8)
    torch.testing.assert_close(up[:, 0], const[:, 0])
    torch.testing.assert_close(up[:, 1:], torch.full((1, 36, 8), 3.0), rtol=1e-5, atol=1e-5)
    want = F.interpolate(
        pos[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2), size=(2, 2), mode="bicubic", antialias=True
    )
    torch.testing.assert_close(
        resample_pos_embed(pos, (2, 2))[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 4, 8)
    )
    # other input sizes: resampled on the fly, or refused when the model is static
    model = _tiny()
    assert model(_images(size=24)).shape == (2, 5)
    with pytest.raises(ConfigError, match="16x16"):
        _tiny(dynamic_img_size=False)(_images(size=24))


def test_input_checks_name_the_model():
    model = create_model("vit_pico_patch4_32", num_classes=3)
    with pytest.raises(ConfigError, match="vit_pico_patch4_32.*divisible by 4"):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(ConfigError, match=r"vit_pico_patch4_32 expects images \[B, C, H, W\]"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ConfigError, match="3 input channels"):
        model(torch.randn(1, 1, 32, 32))


def _to_timm(state):
    out = dict(state)
    out["head.weight"], out["head.bias"] = out.pop("head.fc.weight"), out.pop("head.fc.bias")
    return out


def _to_transformers(state, depth):
    out = {
        "vit.embeddings.cls_token": state["cls_token"],
        "vit.embeddings.position_embeddings": state["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "vit.layernorm.weight": state["norm.weight"],
        "vit.layernorm.bias": state["norm.bias"],
        "classifier.weight": state["head.fc.weight"],
        "classifier.bias": state["head.fc.bias"],
    }
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense"}
    names |= {"mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(depth):
        p = f"vit.encoder.layer.{i}"
        for ours, theirs in names.items():
            for t in ("weight", "bias"):
                out[f"{p}.{theirs}.{t}"] = state[f"blocks.{i}.{ours}.{t}"]
        for t in ("weight", "bias"):
            q, k, v = state[f"blocks.{i}.attn.qkv.{t}"].chunk(3, dim=0)
            out[f"{p}.attention.attention.query.{t}"] = q
            out[f"{p}.attention.attention.key.{t}"] = k
            out[f"{p}.attention.attention.value.{t}"] = v
    return out


@pytest.mark.parametrize("layout", ["timm", "transformers"])
def test_official_checkpoints_load(tmp_path, layout):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = create_model("vit_pico_patch4_32", num_classes=6).eval()
    state = {k: v.clone().contiguous() for k, v in src.state_dict().items()}
    official = _to_timm(state) if layout == "timm" else _to_transformers(state, depth=4)
    assert "head.fc.weight" not in official
    path = tmp_path / "vit.safetensors"
    save_file(official, str(path))
    torch.manual_seed(1)
    dst = create_model("vit_pico_patch4_32", num_classes=6, pretrained_file=path).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))
    # fine-tuning: another class count keeps the backbone and drops the classifier
    other = create_model("vit_pico_patch4_32", num_classes=3, pretrained_file=path).eval()
    torch.testing.assert_close(other.forward_features(x), src.forward_features(x))


def test_checkpoint_pos_embed_is_resampled_to_the_model_grid(tmp_path):
    torch.manual_seed(0)
    big = create_model("vit_pico_patch4_32", num_classes=4, img_size=48)
    small = create_model("vit_pico_patch4_32", num_classes=4)
    state = _to_timm(big.state_dict())
    mapped = checkpoint_filter_fn(state, small)
    assert mapped["pos_embed"].shape == small.pos_embed.shape
    torch.testing.assert_close(mapped["pos_embed"], resample_pos_embed(big.pos_embed.detach(), (8, 8)))
    torch.save(state, tmp_path / "big.pth")
    loaded = create_model("vit_pico_patch4_32", num_classes=4, pretrained_file=tmp_path / "big.pth")
    torch.testing.assert_close(loaded.patch_embed.proj.weight, big.patch_embed.proj.weight)


def test_gmacs_of_the_pico_model_match_the_closed_form():
    """Linear layers plus both attention products (count with SDPA's math backend: torch's FLOP
    counter has no formula for the CPU flash kernel)."""
    model = create_model("vit_pico_patch4_32", num_classes=10)
    c, hidden, n, depth, p, k = 64, 128, 65, 4, 4, 10
    per_block = n * (3 * c * c + c * c + 2 * c * hidden) + 2 * n * n * c
    total = depth * per_block + (n - 1) * 3 * p * p * c + c * k
    with sdpa_kernel([SDPBackend.MATH]):
        got = count_gmacs(model, 32)
    assert got == pytest.approx(total / 1e9, rel=1e-9)
