"""TransDAE: efficient attention against its loop formula, the inter-scale interaction module by hand,
patch expanding's pixel order, shapes and gradients of the network, Dice and HD95 on hand cases (two
squares with known overlap and offset) and against a brute-force loop, the Synapse readers and their
errors, the synthetic shapes set, the CE + Dice loss, and a short run through the engine."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from interplay.core.errors import ConfigError, DataError
from interplay.vision.modules.transdae import (
    CaseMetrics,
    EfficientSpatialAttention,
    InterScaleInteraction,
    OverlapDice,
    PatchExpand,
    SynapseDataModule,
    case_metrics,
    dice,
    efficient_attention,
    hd95,
    make_shapes_volume,
    read_h5_volume,
    read_npz_slice,
    soft_dice_loss,
    surface,
    transdae_tiny,
    write_synthetic_synapse,
)
from interplay.vision.registry import REGISTRY


# -- attention ------------------------------------------------------------------------------------------
def test_efficient_attention_matches_its_loop_formula():
    """E = rho_q(Q) (rho_k(K)^T V): rho_q softmax over each query's channels, rho_k over the tokens."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 1, 7, 4), torch.randn(2, 1, 5, 4), torch.randn(2, 1, 5, 3)
    got = efficient_attention(q, k, v)
    want = torch.empty(2, 1, 7, 3)
    for b in range(2):
        rq = torch.stack([q[b, 0, i].softmax(0) for i in range(7)])  # [7, 4]
        rk = torch.stack([k[b, 0, :, d].softmax(0) for d in range(4)], dim=1)  # [5, 4]
        for i in range(7):
            for e in range(3):
                want[b, 0, i, e] = sum(
                    rq[i, d] * sum(rk[j, d] * v[b, 0, j, e] for j in range(5)) for d in range(4)
                )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_spatial_reduction_shrinks_the_key_set():
    torch.manual_seed(0)
    attn = EfficientSpatialAttention(8, heads=2, sr_ratio=2)
    x = torch.randn(2, 16, 8)
    assert attn.reduce(x, 4, 4).shape == (2, 4, 8)
    assert attn(x, 4, 4).shape == (2, 16, 8)
    with pytest.raises(ConfigError):
        attn(torch.randn(2, 15, 8), 3, 5)


def test_inter_scale_interaction_by_hand():
    torch.manual_seed(0)
    module = InterScaleInteraction(4)
    e, d = torch.randn(2, 9, 4), torch.randn(2, 9, 4)
    # zero large-kernel maps: out = W [e; d]
    for lka in (module.lka_from_decoder, module.lka_from_encoder):
        torch.nn.init.zeros_(lka.conv1.weight)
        torch.nn.init.zeros_(lka.conv1.bias)
    torch.testing.assert_close(module(e, d, 3, 3), module.fuse(torch.cat([e, d], -1)))
    # a constant gate c from the decoder scales the skip by (1 + c)
    torch.nn.init.constant_(module.lka_from_decoder.conv1.bias, 0.5)
    torch.testing.assert_close(module(e, d, 3, 3), module.fuse(torch.cat([1.5 * e, d], -1)))


def test_patch_expand_pixel_order():
    expand = PatchExpand(4, 2)
    torch.nn.init.eye_(expand.expand.weight)  # Linear(4 -> 8) = identity on the first 4 outputs
    torch.nn.init.ones_(expand.norm.weight)
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 6, 4)  # 2x3 map, 4 channels
    y, h, w = expand(x, 2, 3)
    assert (h, w) == (4, 6) and y.shape == (1, 24, 2)
    grid = expand.expand(x).view(2, 3, 2, 2, 2)  # [h, w, p1, p2, c]
    raw = grid.permute(0, 2, 1, 3, 4).reshape(24, 2)
    torch.testing.assert_close(y[0], torch.nn.functional.layer_norm(raw, (2,)))


def test_transdae_shapes_gradients_and_input_checks():
    torch.manual_seed(0)
    model = transdae_tiny(num_classes=4)
    x = torch.randn(2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 4, 64, 64) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert x.grad is None
    with pytest.raises(ConfigError, match="divisible by 32"):
        model(torch.randn(1, 1, 48, 48))
    with pytest.raises(ConfigError):
        model(torch.randn(1, 3, 64, 64))
    assert {"transdae", "transdae_tiny"} <= set(REGISTRY.models.names())


# -- metrics --------------------------------------------------------------------------------------------
def _squares(offset: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    a[10:20, 10:20] = True
    b[10:20, 10 + offset : 20 + offset] = True
    return a, b


def _hd95_loop(a: np.ndarray, b: np.ndarray) -> float:
    """Brute force: every surface point's distance to the nearest surface point of the other mask."""
    sa, sb = np.argwhere(surface(a)), np.argwhere(surface(b))
    d_ab = [min(math.dist(p, q) for q in sb) for p in sa]
    d_ba = [min(math.dist(p, q) for q in sa) for p in sb]
    return float(np.percentile(d_ab + d_ba, 95))


def test_dice_and_hd95_on_two_squares():
    a, b = _squares(4)
    # overlap 10 x 6 = 60 pixels of 100 + 100
    assert dice(a, b) == pytest.approx(0.6)
    # per direction the 36 surface distances are 0 x12, 1 x4, 2 x4, 3 x4, 4 x12: the 95th percentile of
    # the 72 pooled values lies among the 24 fours
    assert hd95(a, b) == pytest.approx(4.0)
    assert dice(a, a) == 1.0 and hd95(a, a) == 0.0
    for offset in (1, 3, 7):
        a, b = _squares(offset)
        assert hd95(a, b) == pytest.approx(_hd95_loop(a, b))
    # two parallel lines 3 columns apart: every surface distance is 3
    la, lb = np.zeros((12, 12), bool), np.zeros((12, 12), bool)
    la[2:10, 5], lb[2:10, 8] = True, True
    assert hd95(la, lb) == pytest.approx(3.0) and dice(la, lb) == 0.0
    # anisotropic spacing scales the distances
    assert hd95(la, lb, spacing=(1.0, 2.0)) == pytest.approx(6.0)


def test_hd95_in_3d_matches_loop():
    rng = np.random.default_rng(0)
    a = np.zeros((6, 12, 12), bool)
    b = np.zeros_like(a)
    a[1:4, 2:8, 3:9] = True
    b[2:5, 4:10, 2:7] = True
    b[rng.random(b.shape) < 0.02] = True
    assert hd95(a, b) == pytest.approx(_hd95_loop(a, b))


def test_case_metrics_follow_the_synapse_convention():
    gt = np.zeros((2, 8, 8), int)
    pred = np.zeros_like(gt)
    gt[0, 1:4, 1:4] = 1  # class 1 present in both
    pred[0, 1:4, 1:4] = 1
    pred[1, 5:7, 5:7] = 2  # class 2 predicted, absent from the ground truth -> (1, 0)
    gt[1, 0:2, 0:2] = 3  # class 3 missed -> (0, 0)
    values = case_metrics(pred, gt, num_classes=4)
    np.testing.assert_allclose(values, [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    metric = CaseMetrics(4)
    metric.update(torch.as_tensor(pred), torch.as_tensor(gt))
    metric.update(torch.as_tensor(gt), torch.as_tensor(gt))  # perfect case: class 3 -> (1, 0)
    out = metric.compute()
    torch.testing.assert_close(out["dice_per_class"], torch.tensor([1.0, 0.5, 0.5]))
    assert float(out["dice"]) == pytest.approx(2 / 3)


def test_overlap_dice_pools_over_batches():
    metric = OverlapDice(3)
    pred = torch.tensor([[1, 1, 0, 2]])
    gt = torch.tensor([[1, 0, 0, 2]])
    metric.update(pred, gt)
    metric.update(torch.tensor([[2, 2, 0, 0]]), torch.tensor([[2, 0, 0, 0]]))
    # class 1: 2 * 1 / (2 + 1); class 2: 2 * 2 / (3 + 2)
    assert float(metric.compute()) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_soft_dice_loss_is_zero_for_a_perfect_confident_prediction():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(perfect, labels)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(1, 3, 2, 2)
    # p = 1/3 everywhere: class c with n_c pixels -> 1 - (2 n_c / 3) / (4 / 9 + n_c)
    want = np.mean([1 - (2 * n / 3) / (4 / 9 + n) for n in (1, 2, 1)])
    assert float(soft_dice_loss(uniform, labels)) == pytest.approx(want, rel=1e-4)


# -- data -----------------------------------------------------------------------------------------------
def test_readers_and_their_errors(tmp_path):
    np.savez(tmp_path / "ok.npz", image=np.zeros((8, 8), np.float32), label=np.ones((8, 8), np.uint8))
    image, label = read_npz_slice(tmp_path / "ok.npz")
    assert image.dtype == np.float32 and label.dtype == np.int64 and label.sum() == 64
    np.savez(tmp_path / "nolabel.npz", image=np.zeros((8, 8)))
    with pytest.raises(DataError, match="label"):
        read_npz_slice(tmp_path / "nolabel.npz")
    np.savez(tmp_path / "shape.npz", image=np.zeros((8, 8)), label=np.zeros((8, 9)))
    with pytest.raises(DataError, match="shape"):
        read_npz_slice(tmp_path / "shape.npz")
    np.savez(tmp_path / "nan.npz", image=np.full((8, 8), np.nan), label=np.zeros((8, 8)))
    with pytest.raises(DataError, match="NaN"):
        read_npz_slice(tmp_path / "nan.npz")
    with pytest.raises(DataError, match="not found"):
        read_npz_slice(tmp_path / "missing.npz")
    with h5py.File(tmp_path / "vol.npy.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((3, 8, 8), np.float32))
        f.create_dataset("label", data=np.zeros((3, 8, 8), np.uint8))
    assert read_h5_volume(tmp_path / "vol.npy.h5")[0].shape == (3, 8, 8)
    with h5py.File(tmp_path / "bad.npy.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match="label"):
        read_h5_volume(tmp_path / "bad.npy.h5")
    with pytest.raises(DataError, match="train_npz"):
        SynapseDataModule(str(tmp_path), image_size=32)


def test_synthetic_shapes_volume_and_layout(tmp_path):
    image, label = make_shapes_volume(10, 64, np.random.default_rng(0))
    assert image.shape == label.shape == (10, 64, 64) and image.min() >= 0 and image.max() <= 1
    assert set(np.unique(label)) <= {0, 1, 2, 3} and {1, 2, 3} <= set(np.unique(label))
    # shapes are brighter than the background on average
    assert image[label > 0].mean() > image[label == 0].mean() + 0.2

    root = write_synthetic_synapse(
        tmp_path / "syn", n_train_cases=3, n_test_cases=1, depth=4, size=32, seed=0
    )
    assert len(list((root / "train_npz").glob("*.npz"))) == 12
    assert (root / "lists/lists_Synapse/test_vol.txt").read_text().split() == ["case0004"]
    dm = SynapseDataModule(str(root), image_size=32, num_classes=4, val_fraction=0.34, batch_size=4)
    dm.setup()
    cases = lambda part: {p.stem.split("_slice")[0] for p in part}  # noqa: E731
    assert not cases(dm.train_slices) & cases(dm.val_slices)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.long
    xv, yv = next(iter(dm.test_dataloader()))
    assert xv.shape == (1, 4, 32, 32) and yv.shape == (1, 4, 32, 32)
    with pytest.raises(ConfigError):
        SynapseDataModule(str(root), image_size=48)


def test_training_run_through_the_engine_scores_volumes(tmp_path):
    from interplay.core.config import from_dict
    from interplay.core.train import train
    from interplay.core.train.config import ExperimentConfig

    cfg = from_dict(
        ExperimentConfig,
        {
            "domain": "vision",
            "model": {"name": "transdae_tiny", "params": {"dims": [8, 16, 32, 64], "channel_heads": 2}},
            "data": {
                "name": "synthetic-seg-shapes",
                "root": str(tmp_path / "shapes"),
                "batch_size": 8,
                "params": {
                    "n_train_cases": 3,
                    "n_test_cases": 2,
                    "depth": 4,
                    "size": 32,
                    "val_fraction": 0.34,
                },
            },
            "task": {"name": "medical-segmentation"},
            "optimizer": {"name": "adamw", "lr": 1e-3},
            "trainer": {
                "max_epochs": 1,
                "monitor": "val/pooled_dice",
                "monitor_mode": "max",
                "progress_bar": False,
                "accelerator": "cpu",
                "tensorboard": False,
            },  # fmt: skip
            "run_root": str(tmp_path / "runs"),
        },
    )
    result = train(cfg, REGISTRY)
    test = result.metrics["test"]
    for key in ("test/dice", "test/hd95", "test/dice_ellipse", "test/hd95_triangle", "test/pooled_dice"):
        assert key in test and math.isfinite(test[key])
    assert 0 <= test["test/dice"] <= 1
