"""TCPA (Liu et al., ICML 2025): cosine top-k matching on a hand case, the attention mask read back
from the exact attention maps (a token's attention to prompts it did not match is exactly zero), the
masked SDPA forward against the exact-probability path, gradients reaching only prompts, keys and
head, the added-parameter formula, weights from an interplay run checkpoint, and a short CLI run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interplay.core.errors import ConfigError, DataError
from interplay.vision.cli import main
from interplay.vision.models import count_parameters, create_model
from interplay.vision.models.vit import VisionTransformer
from interplay.vision.modules.tcpa import (
    TCPAViT,
    build_vit_backbone,
    cosine_topk,
    selection_mask,
    tcpa_added_parameters,
    tcpa_attention_mask,
)
from interplay.vision.registry import REGISTRY


def _vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=5)
    return VisionTransformer(**{**cfg, **kw})


def _tcpa(**kw) -> TCPAViT:
    vit = _vit()
    torch.manual_seed(1)
    defaults = dict(pool_size=5, prompt_length=2, top_k=2, cls_pool_size=4, cls_prompt_length=1, cls_top_k=3)
    return TCPAViT(vit, **{**defaults, **kw})


def _images(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def test_cosine_topk_hand_case():
    # keys at 0, 45, 90, 180 degrees, with different lengths (cosine ignores them)
    keys = torch.tensor([[1.0, 0.0], [3.0, 3.0], [0.0, 0.5], [-2.0, 0.0]])
    queries = torch.tensor([[1.0, 0.1], [0.0, 2.0], [-1.0, -0.2]])
    idx, sim = cosine_topk(queries, keys, 2)
    # ~6 deg: 0 then 45; 90 deg: 90 then 45; ~191 deg: 180 then 90 (101 deg away, the next nearest)
    assert idx.tolist() == [[0, 1], [2, 1], [3, 2]]
    want = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    torch.testing.assert_close(sim, want.gather(1, idx))
    assert sim[1].tolist() == pytest.approx([1.0, math.cos(math.pi / 4)], abs=1e-6)
    # batched queries [B, N, D] select per token
    idx3, _ = cosine_topk(queries.view(1, 3, 2), keys, 1)
    assert idx3.flatten().tolist() == [0, 2, 3]
    with pytest.raises(ConfigError):
        cosine_topk(queries, keys, 5)


def test_selection_mask_spreads_each_prompt_over_its_tokens():
    m = selection_mask(torch.tensor([[2, 0]]), pool_size=3, prompt_length=2)
    assert m.tolist() == [[True, True, False, False, True, True]]
    mask = tcpa_attention_mask(
        torch.tensor([[1]]), torch.tensor([[[0], [2]]]), cls_pool=(2, 1), image_pool=(3, 1)
    )[0, 0]
    # tokens: CLS, 2 patches, 2 CLS prompts, 3 image prompts
    assert mask[0].tolist() == [True, True, True, False, True, False, False, False]
    assert mask[1].tolist() == [True, True, True, False, False, True, False, False]
    assert mask[2].tolist() == [True, True, True, False, False, False, False, True]
    assert mask[3:].all()


def test_attention_to_unmatched_prompts_is_exactly_zero():
    model = _tcpa().eval()
    x = _images()
    traces = model.get_attention_maps(x)
    assert len(traces) == 2
    n, base = 16, 17
    n_cls, n_img = 4 * 1, 5 * 2
    for trace in traces:
        probs = trace.attention  # [B, heads, T, T]
        assert probs.shape == (3, 3, base + n_cls + n_img, base + n_cls + n_img)
        cls_cols, img_cols = probs[..., base : base + n_cls], probs[..., base + n_cls :]
        for b in range(3):
            # the class token: only its own CLS prompts, no image prompt
            chosen = set(trace.cls_indices[b].tolist())
            assert len(chosen) == 3
            for m in range(4):
                values = cls_cols[b, :, 0, m]
                assert bool((values > 0).all()) if m in chosen else bool((values == 0).all())
            assert bool((img_cols[b, :, 0] == 0).all())
            for t in range(n):
                assert bool((cls_cols[b, :, 1 + t] == 0).all())  # patches never see CLS prompts
                chosen = set(trace.image_indices[b, t].tolist())
                assert len(chosen) == 2
                for m in range(5):
                    values = img_cols[b, :, 1 + t, 2 * m : 2 * m + 2]
                    assert bool((values > 0).all()) if m in chosen else bool((values == 0).all())
        # the rows still sum to one over what they may see
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    # the first block's matching is the cosine top-k of the embedded tokens
    z0 = model.backbone.prepare_tokens(x)
    want_img, _ = cosine_topk(z0[:, 1:], model.image_pool.keys[0], 2)
    want_cls, _ = cosine_topk(z0[:, 0], model.cls_pool.keys[0], 3)
    assert torch.equal(traces[0].image_indices, want_img)
    assert torch.equal(traces[0].cls_indices, want_cls)
    # patches really differ in what they picked (token-level coordination)
    assert len({tuple(sorted(r)) for r in traces[0].image_indices.flatten(0, 1).tolist()}) > 1


def test_masked_forward_matches_the_exact_probability_path():
    model = _tcpa().eval()
    x = _images()
    feats = model.forward_features(x)  # blocks through core attend (SDPA, dense mask)
    vit = model.backbone
    z = vit.prepare_tokens(x)
    for i, (block, trace) in enumerate(zip(vit.blocks, model.get_attention_maps(x))):
        prompts = torch.cat([model.cls_pool.tokens(i), model.image_pool.tokens(i)]).expand(3, -1, -1)
        out, _ = block(torch.cat([z, prompts], dim=1), trace.mask, True)
        z = out[:, :17]
    torch.testing.assert_close(feats, vit.norm(z), rtol=1e-4, atol=1e-5)
    assert feats.shape == (3, 17, 24)


def test_gradients_reach_only_prompts_keys_and_head():
    model = _tcpa().train()
    x, y = _images(), torch.tensor([0, 3, 1])
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    (ce + 10.0 * model.matching_loss).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "backbone.head.fc.weight",
        "backbone.head.fc.bias",
        "cls_pool.keys",
        "cls_pool.prompts",
        "image_pool.keys",
        "image_pool.prompts",
    }
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # keys learn from the matching loss only (selection is discrete), prompts from the task loss
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert model.image_pool.keys.grad is None or model.image_pool.keys.grad.abs().sum() == 0
    assert model.image_pool.prompts.grad.abs().sum() > 0
    model.zero_grad()
    model(x)
    model.matching_loss.backward()
    assert model.image_pool.prompts.grad is None or model.image_pool.prompts.grad.abs().sum() == 0
    assert model.image_pool.keys.grad.abs().sum() > 0
    # the frozen backbone stays in eval mode (no dropout / drop-path); the head trains
    assert model.training and not model.backbone.blocks[0].training and model.backbone.head.training


def test_matching_loss_is_one_minus_cosine_of_the_chosen_keys():
    model = _tcpa().eval()
    x = _images()
    model(x)
    z0 = model.backbone.prepare_tokens(x)
    _, sim_img = cosine_topk(z0[:, 1:], model.image_pool.keys[0], 2)
    _, sim_cls = cosine_topk(z0[:, 0], model.cls_pool.keys[0], 3)
    block0 = (1 - sim_img).mean() + (1 - sim_cls).mean()
    model.backbone.blocks = model.backbone.blocks[:1]
    model.cls_pool.keys.data, model.image_pool.keys.data = model.cls_pool.keys[:1], model.image_pool.keys[:1]
    model.cls_pool.prompts.data = model.cls_pool.prompts[:1]
    model.image_pool.prompts.data = model.image_pool.prompts[:1]
    model(x)
    torch.testing.assert_close(model.matching_loss, block0)


def test_random_matching_only_in_training():
    model = _tcpa()
    model.random_matching = True
    x = _images()
    model.eval()
    a = model.get_attention_maps(x)[0].image_indices
    b = model.get_attention_maps(x)[0].image_indices
    assert torch.equal(a, b)  # eval ignores the warm-up switch
    model.train()
    torch.manual_seed(5)
    r = model._run(x, trace=True)[2][0].image_indices
    assert not torch.equal(r, a)
    assert all(len(set(row)) == 2 for row in r.flatten(0, 1).tolist())  # still k distinct prompts


def test_added_parameters_follow_the_formula():
    # ViT-pico: 4 blocks x 64 wide; pools of 6 prompts of 2 tokens
    model = REGISTRY.models.create(
        "tcpa_vit", num_classes=7, backbone="vit_pico_patch4_32", pool_size=6, prompt_length=2, top_k=2
    )
    head = sum(p.numel() for p in model.backbone.head.parameters())
    want = tcpa_added_parameters(depth=4, pool_size=6, prompt_length=2, width=64)
    assert want == 2 * 4 * 6 * 3 * 64 == model.added_parameters()
    assert count_parameters(model, trainable_only=True) - head == want
    assert (
        count_parameters(model) == count_parameters(create_model("vit_pico_patch4_32", num_classes=7)) + want
    )
    # the paper's setting, ViT-B/16 with pools of 18 one-token prompts: 663,552 (built on meta)
    with torch.device("meta"):
        big = REGISTRY.models.create("tcpa_vit", num_classes=200)
    assert big.added_parameters() == tcpa_added_parameters(12, 18, 1, 768) == 663_552
    # the linear probe adds nothing and trains the head only
    probe = REGISTRY.models.create(
        "tcpa_vit", num_classes=7, backbone="vit_pico_patch4_32", use_prompts=False
    )
    assert probe.added_parameters() == 0
    assert count_parameters(probe, trainable_only=True) == 65 * 7
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(probe.eval()(x), probe.backbone(x))


def test_bad_settings_and_weights_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="plain ViT"):
        TCPAViT(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="top_k"):
        _tcpa(top_k=6)
    with pytest.raises(DataError, match="no file matches"):
        build_vit_backbone("vit_pico_patch4_32", 3, pretrained_file=str(tmp_path / "*" / "best-*.ckpt"))


def test_backbone_weights_from_an_interplay_run_checkpoint(tmp_path):
    torch.manual_seed(3)
    source = create_model("vit_pico_patch4_32", num_classes=10, img_size=16)
    run = tmp_path / "runs" / "20260101-000000" / "checkpoints"
    run.mkdir(parents=True)
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    state["criterion.weight"] = torch.zeros(3)  # other task keys are ignored
    torch.save({"state_dict": state, "epoch": 3}, run / "best-epoch003.ckpt")
    vit = build_vit_backbone(
        "vit_pico_patch4_32",
        5,
        pretrained_file=str(tmp_path / "runs" / "*" / "checkpoints" / "best-*.ckpt"),
        params={"img_size": 16},
    )
    for name, p in vit.state_dict().items():
        if not name.startswith("head."):
            torch.testing.assert_close(p, source.state_dict()[name])
    assert vit.head.fc.out_features == 5


def test_tcpa_trains_from_the_command_line(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            "tcpa-digits",
            "model.params.pretrained_file=null",
            "data.params.classes=[3,8]",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "--run-root",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/acc" in metrics["test"]
    assert "train/matching_loss" in (run_dir / "metrics.csv").read_text()
