"""DCAL (Zhu et al., CVPR 2022): attention rollout against a loop reference, GLCA's local queries and
cross-attention against per-head loops, PWCA sharing the SA weights and only acting in training
(evaluation outputs independent of the batch), the uncertainty-weighted loss and the batch-hard
triplet loss on hand cases, mAP / rank-1 on hand cases, the re-ID data modules (digits-reid and a
Market-1501 folder) and short CLI runs of both tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interplay.core.errors import ConfigError, DataError
from interplay.vision.cli import main
from interplay.vision.models import count_parameters
from interplay.vision.models.vit import VisionTransformer
from interplay.vision.modules.dcal import (
    DCALViT,
    IdentityBatchSampler,
    ReIDFolder,
    UncertaintyWeightedLoss,
    attention_rollout,
    batch_hard_triplet_loss,
    block_cross_forward,
    distractor_permutation,
    num_local_queries,
    reid_retrieval,
    top_response_tokens,
)
from interplay.vision.registry import REGISTRY


def _vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dict(img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=3, mlp_ratio=2.0, num_classes=5)
    return VisionTransformer(**{**cfg, **kw})


def _dcal(**kw) -> DCALViT:
    model = DCALViT(_vit(), local_ratio=0.25, **kw)
    torch.manual_seed(1)
    for p in model.glca_block.parameters():  # make GLCA differ from the last SA block
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def _images(b: int = 4) -> torch.Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(2))


# -- rollout ------------------------------------------------------------------------------------------
def _rollout_loop(maps: list[np.ndarray]) -> np.ndarray:
    """Per batch entry: mean over heads, 0.5 A + 0.5 I, row-normalise, left-multiply, by loops."""
    b, h, n, _ = maps[0].shape
    out = np.zeros((b, n, n))
    for bi in range(b):
        acc = np.eye(n)
        for a in maps:
            fused = [[sum(a[bi, hh, i, j] for hh in range(h)) / h for j in range(n)] for i in range(n)]
            bar = [[0.5 * fused[i][j] + (0.5 if i == j else 0.0) for j in range(n)] for i in range(n)]
            bar = [[v / sum(row) for v in row] for row in bar]
            acc = np.array(
                [[sum(bar[i][k] * acc[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
            )
        out[bi] = acc
    return out


def test_rollout_equals_a_loop_reference_on_random_maps():
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64).softmax(-1) for _ in range(4)]
    got = attention_rollout(maps)
    want = _rollout_loop([m.numpy() for m in maps])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    # order matters: the last block multiplies on the left
    assert not torch.allclose(got, attention_rollout(maps[::-1]))
    # identity attention rolls out to the identity; fused maps [B, L, L] are accepted
    eye = torch.eye(5).expand(2, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye]), eye)
    torch.testing.assert_close(attention_rollout([m.mean(1) for m in maps]), got)


def test_top_response_tokens_and_r():
    rollout = torch.zeros(1, 6, 6)
    rollout[0, 0] = torch.tensor([0.9, 0.05, 0.4, 0.1, 0.3, 0.2])  # CLS row; column 0 is CLS itself
    assert top_response_tokens(rollout, 0.4).tolist() == [[2, 4]]
    assert num_local_queries(784, 0.1) == 78 and num_local_queries(128, 0.3) == 38
    assert num_local_queries(16, 0.01) == 1
    with pytest.raises(ConfigError):
        num_local_queries(16, 0.0)


# -- GLCA / PWCA --------------------------------------------------------------------------------------
def _attention_loop(block, x, context):
    """Per head ``softmax(q k^T / sqrt(d)) v`` with q from ``x`` and k, v from ``context``."""
    attn = block.attn
    c = x.shape[-1]
    d = attn.head_dim
    qkv_x, qkv_c = attn.qkv(block.norm1(x)), attn.qkv(block.norm1(context))
    heads = []
    for h in range(attn.num_heads):
        q = qkv_x[..., h * d : (h + 1) * d]
        k = qkv_c[..., c + h * d : c + (h + 1) * d]
        v = qkv_c[..., 2 * c + h * d : 2 * c + (h + 1) * d]
        heads.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1) @ v)
    y = x + attn.proj(torch.cat(heads, -1))
    return y + block.mlp(block.norm2(y))


def test_cross_attention_block_against_a_per_head_loop():
    vit = _vit().eval()
    block = vit.blocks[0]
    gen = torch.Generator().manual_seed(3)
    x, context = torch.randn(2, 5, 24, generator=gen), torch.randn(2, 9, 24, generator=gen)
    torch.testing.assert_close(block_cross_forward(block, x, context), _attention_loop(block, x, context))
    torch.testing.assert_close(block_cross_forward(block, x, x), block(x), rtol=1e-5, atol=1e-6)


def test_glca_queries_the_top_rollout_tokens_against_all_tokens():
    model = _dcal().eval()
    x = _images()
    out = model.branches(x)
    vit = model.backbone
    # the local queries: top R = 4 of 16 patches by the CLS row of the rollout of the exact maps
    rollout = attention_rollout(vit.get_attention_maps(x))
    torch.testing.assert_close(out.rollout, rollout)
    want_idx = rollout[:, 0, 1:].topk(4, dim=-1).indices + 1
    assert torch.equal(out.local_indices, want_idx)
    # GLCA: class token + those tokens as queries, every token of the last block's input as keys
    z = vit.prepare_tokens(x)
    for block in vit.blocks[:-1]:
        z = block(z)
    queries = torch.cat([z[:, :1], torch.stack([z[b, want_idx[b]] for b in range(4)])], dim=1)
    tokens = model.glca_norm(_attention_loop(model.glca_block, queries, z))
    torch.testing.assert_close(out.glca_features, tokens[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.glca_logits, model.glca_head.fc(tokens[:, 0]), rtol=1e-4, atol=1e-5)
    # SA is the plain ViT; inference adds the two branches' probabilities
    torch.testing.assert_close(out.sa_logits, vit(x), rtol=1e-5, atol=1e-6)
    probs = model(x).exp()
    torch.testing.assert_close(probs, 0.5 * (vit(x).softmax(-1) + out.glca_logits.softmax(-1)))


def test_pwca_shares_the_sa_weights_and_mixes_the_distractor_keys():
    model = _dcal().train()
    for m in model.modules():  # no dropout in this model, but keep the check deterministic
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = _images()
    perm = torch.tensor([1, 2, 3, 0])
    out = model.branches(x, perm)
    vit = model.backbone
    # by hand: SA tokens per block; PWCA block i attends [own; distractor's SA tokens at block i]
    z = vit.prepare_tokens(x)
    sa_inputs = []
    for block in vit.blocks:
        sa_inputs.append(z)
        z = block(z)
    y = sa_inputs[0]
    for block, zi in zip(vit.blocks, sa_inputs):
        y = _attention_loop(block, y, torch.cat([y, zi[perm]], dim=1))
    torch.testing.assert_close(out.pwca_logits, vit.head(vit.norm(y)), rtol=1e-4, atol=1e-5)
    # no parameters of its own
    plain = DCALViT(_vit(), glca=False, pwca=False)
    assert count_parameters(DCALViT(_vit(), glca=False, pwca=True)) == count_parameters(plain)
    assert count_parameters(model) > count_parameters(plain)  # GLCA's own block, norm and head
    # another distractor changes image 0's PWCA output, not its SA output
    other = model.branches(x, torch.tensor([2, 3, 0, 1]))
    assert not torch.allclose(other.pwca_logits[0], out.pwca_logits[0])
    torch.testing.assert_close(other.sa_logits, out.sa_logits)
    # gradients of the PWCA loss reach the shared SA weights
    model.zero_grad()
    out.pwca_logits.sum().backward()
    assert vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.glca_block.parameters())


def test_pwca_is_not_used_at_inference():
    model = _dcal().eval()
    x = _images(5)
    assert model.branches(x, distractor_permutation(5)).pwca_logits is None
    batch = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)
    shuffled = model(x[[4, 2, 0, 1, 3]])
    torch.testing.assert_close(shuffled, batch[[4, 2, 0, 1, 3]], rtol=1e-5, atol=1e-6)
    emb = model.embed(x)
    assert emb.shape == (5, 48)
    torch.testing.assert_close(emb[2:3], model.embed(x[2:3]), rtol=1e-5, atol=1e-6)


def test_distractors_are_other_images_of_the_batch():
    for b in (2, 3, 8):
        for seed in range(5):
            perm = distractor_permutation(b, torch.Generator().manual_seed(seed))
            assert sorted(perm.tolist()) == list(range(b)) and bool((perm != torch.arange(b)).all())


# -- losses and metrics -------------------------------------------------------------------------------
def test_uncertainty_weighted_loss_value_and_gradients():
    loss = UncertaintyWeightedLoss(["sa", "glca", "pwca"])
    loss.log_vars.data = torch.tensor([0.0, math.log(2.0), -1.0])
    values = {"sa": torch.tensor(3.0), "glca": torch.tensor(4.0), "pwca": torch.tensor(0.5)}
    total = loss(values)
    want = 3.0 + (0.5 * 4.0 + math.log(2.0)) + (math.e * 0.5 - 1.0)
    assert float(total.detach()) == pytest.approx(want)
    total.backward()
    # d/dw_i = 1 - exp(-w_i) L_i
    torch.testing.assert_close(loss.log_vars.grad, torch.tensor([1 - 3.0, 1 - 2.0, 1 - math.e * 0.5]))
    assert float(loss({"sa": torch.tensor(3.0)}).detach()) == pytest.approx(3.0)  # absent losses add nothing
    with pytest.raises(ConfigError):
        loss({"other": torch.tensor(1.0)})


def test_batch_hard_triplet_hand_case():
    feats = torch.tensor([[0.0], [1.0], [3.0], [7.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    # anchor (hardest pos, hardest neg): 0 (1, 3), 1 (1, 2), 2 (4, 2), 3 (4, 6); margin 0.5
    want = (0.0 + 0.0 + 2.5 + 0.0) / 4
    got = batch_hard_triplet_loss(feats, labels, margin=0.5)
    assert float(got.detach()) == pytest.approx(want, abs=1e-5)
    got.backward()
    assert torch.isfinite(feats.grad).all()
    # no anchor with a positive: zero, still differentiable
    assert float(batch_hard_triplet_loss(feats, torch.arange(4)).detach()) == 0.0


def test_map_and_rank1_hand_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[1.0, 0.1], [0.9, 0.5], [0.0, 1.0], [1.0, 0.0], [0.1, 1.0]])
    g_ids = torch.tensor([0, 1, 1, 0, 7])
    # query 0 (id 0) ranks 3, 0, 1, 4, 2: hits at ranks 1, 2 -> AP 1; query 1 (id 1) ranks 2, 4, 1, 0, 3:
    # hits at ranks 1 and 3 -> AP (1 + 2/3) / 2
    out = reid_retrieval(q, torch.tensor([0, 1]), g, g_ids)
    assert float(out["map"]) == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)
    assert float(out["rank1"]) == 1.0
    # the same camera as the query's removes gallery 3 (id 0, cam 0) for query 0: hits at 1 -> AP 1
    out = reid_retrieval(
        q, torch.tensor([0, 1]), g, g_ids, torch.tensor([0, 5]), torch.tensor([1, 1, 1, 0, 1])
    )
    assert float(out["map"]) == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)
    g_cams = torch.tensor([0, 1, 1, 0, 1])  # now both matches of query 0 share its camera: skipped
    out = reid_retrieval(q, torch.tensor([0, 1]), g, g_ids, torch.tensor([0, 5]), g_cams)
    assert float(out["map"]) == pytest.approx((1 + 2 / 3) / 2)
    assert float(out["rank1"]) == 1.0
    with pytest.raises(DataError):
        reid_retrieval(q, torch.tensor([5, 6]), g, g_ids)


# -- data ---------------------------------------------------------------------------------------------
def test_digits_reid_splits_views_and_identity_batches():
    dm = REGISTRY.datasets.create(
        "digits-reid",
        identity="instance",
        train_digits=30,
        val_digits=10,
        test_digits=12,
        views=3,
        batch_size=12,
    )
    assert dm.info == {"num_classes": 30}
    dm.setup()
    images, pids = dm.datasets["train"].tensors
    assert images.shape == (90, 3, 16, 16) and images.dtype == torch.uint8
    assert torch.bincount(pids).tolist() == [3] * 30
    _, tpids, cams, is_query = dm.datasets["test"].tensors
    assert int(is_query.sum()) == 12 and bool((cams[is_query] == 0).all())
    # views of one digit differ, but stay closer to each other than to other digits on average
    v = images.float().view(30, 3, -1)
    within = (v[:, 0] - v[:, 1]).norm(dim=-1).mean()
    across = (v[:, 0] - v.roll(1, 0)[:, 1]).norm(dim=-1).mean()
    assert 0 < within < across
    batch = next(iter(dm.train_dataloader()))
    ids = batch[1].tolist()
    assert len(ids) == 12 and all(ids.count(i) == 4 for i in set(ids)) and len(set(ids)) == 3
    # class identities: 10 of them, all present in training
    dm = REGISTRY.datasets.create("digits-reid", train_digits=100, val_digits=20, test_digits=40)
    assert dm.info == {"num_classes": 10}
    dm.setup()
    assert set(dm.datasets["train"].tensors[1].tolist()) == set(range(10))
    with pytest.raises(ConfigError):
        REGISTRY.datasets.create("digits-reid", views=1)


def test_identity_batch_sampler_draws_p_by_k():
    sampler = IdentityBatchSampler([0, 0, 1, 1, 1, 2, 3, 3, 3, 3], batch_size=6, instances=2, seed=0)
    assert len(sampler) == 1
    (batch,) = list(sampler)
    labels = [[0, 0, 1, 1, 1, 2, 3, 3, 3, 3][i] for i in batch]
    assert len(set(labels)) == 3 and all(labels.count(x) == 2 for x in set(labels))
    with pytest.raises(DataError):
        IdentityBatchSampler([0, 0, 0], batch_size=4, instances=2)


def _market(root: Path, names: dict[str, list[str]]) -> Path:
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for i, name in enumerate(files):
            Image.new("RGB", (8, 16), (i * 20 % 255, 40, 90)).save(root / folder / name)
    return root


def test_market1501_folder_reader(tmp_path):
    train = [f"{pid:04d}_c{c}s1_00000{k}_00.jpg" for pid in range(1, 6) for c, k in ((1, 1), (2, 2))]
    root = _market(
        tmp_path / "market",
        {
            "bounding_box_train": [*train, "-1_c1s1_000001_00.jpg"],
            "query": ["0007_c1s1_000001_00.jpg", "0008_c2s1_000001_00.jpg"],
            "bounding_box_test": [
                "0007_c2s1_000002_00.jpg",
                "0008_c1s1_000002_00.jpg",
                "0000_c3s1_000001_00.jpg",
            ],
        },
    )
    dm = ReIDFolder(str(root), val_identities=2, height=16, width=8, batch_size=4, instances_per_id=2)
    assert dm.info == {"num_classes": 3}
    dm.setup()
    assert len(dm.datasets["train"]) == 6
    assert len(dm.datasets["val"]) == 4 and sum(dm.datasets["val"].is_query) == 2
    test = dm.datasets["test"]
    assert len(test) == 5 and test.is_query == [True, True, False, False, False]
    x, pid, cam, query = test[1]
    assert x.shape == (3, 16, 8) and (pid, cam, query) == (8, 2, True)
    assert sorted(set(dm.datasets["train"].pids)) == [0, 1, 2]
    (tmp_path / "bad" / "query").mkdir(parents=True)
    Image.new("RGB", (8, 16)).save(tmp_path / "bad" / "query" / "person.jpg")
    (tmp_path / "bad" / "bounding_box_train").mkdir()
    Image.new("RGB", (8, 16)).save(tmp_path / "bad" / "bounding_box_train" / "0001_c1.jpg")
    with pytest.raises(DataError, match="person.jpg"):
        ReIDFolder(str(tmp_path / "bad"))
    with pytest.raises(DataError, match="does not exist"):
        ReIDFolder(str(tmp_path / "nowhere"))


# -- end to end ---------------------------------------------------------------------------------------
def _run(tmp_path, capsys, config: str, *extra: str) -> dict:
    code = main(
        [
            "train",
            "--config",
            config,
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            "trainer.limit_train_batches=2",
            *extra,
            "--run-root",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    return json.loads((run_dir / "metrics.json").read_text()) | {"csv": (run_dir / "metrics.csv").read_text()}


def test_dcal_tasks_train_from_the_command_line(tmp_path, capsys):
    metrics = _run(
        tmp_path, capsys, "dcal-digits", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"
    )
    assert {"test/acc", "test/acc_sa", "test/acc_glca"} <= set(metrics["test"])
    assert "train/weight_pwca" in metrics["csv"]
    metrics = _run(
        tmp_path,
        capsys,
        "dcal-digits-reid",
        "data.params.train_digits=60",
        "data.params.val_digits=20",
        "data.params.test_digits=20",
    )
    assert {"test/map", "test/rank1", "test/rank5"} <= set(metrics["test"])
    assert 0.0 <= metrics["test"]["test/map"] <= 1.0
