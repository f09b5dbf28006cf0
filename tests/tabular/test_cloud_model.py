"""CloudFormer: padding invariance, gradients, parameter count, log-cosh loss, LSTM baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interplay.tabular.cloud import CloudFormer, RunLSTM, aggregate_features, count_parameters, log_cosh
from interplay.tabular.cloud.model import PAPER_PARAMETERS, sinusoidal_positions
from interplay.tabular.cloud.tasks import percentage_point_errors

SMALL = dict(n_metrics=206, dim=16, heads=2, depth=2, ffn_dim=32, fusion_hidden=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def test_parameter_count_matches_the_paper():
    model = CloudFormer()  # width 64, 4 x 16 heads, FFN 256, 4 blocks shared by the two branches
    n = count_parameters(model)
    assert n == 231_005
    assert abs(n - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.02
    # one block: MHA 4 * (64 * 64 + 64) + 2 LayerNorms + FFN (64*256 + 256 + 256*64 + 64) = 49,984
    block = model.temporal_blocks[0]
    assert sum(p.numel() for p in block.parameters()) == 49_984
    assert model.system_blocks is model.temporal_blocks
    # independent stacks add exactly four more blocks
    assert count_parameters(CloudFormer(shared_encoder=False)) == n + 4 * 49_984


def test_extra_padding_does_not_change_predictions():
    torch.manual_seed(0)
    model = CloudFormer(**SMALL).eval()
    runs = [torch.randn(7, 206), torch.randn(12, 206)]

    def padded(pad_to: int, fill: float):
        metrics = torch.full((2, pad_to, 206), fill)
        mask = torch.zeros(2, pad_to, dtype=torch.bool)
        for i, run in enumerate(runs):
            metrics[i, : len(run)] = run
            mask[i, : len(run)] = True
        return metrics, mask

    reference = model(*padded(12, 0.0))
    for pad_to, fill in [(13, 0.0), (40, 0.0), (40, 1e6), (40, float("nan"))]:
        torch.testing.assert_close(model(*padded(pad_to, fill)), reference, rtol=1e-5, atol=1e-6)
    # each run alone (no padding at all) gives the same prediction as inside the padded batch
    for i, run in enumerate(runs):
        alone = model(run[None], torch.ones(1, len(run), dtype=torch.bool))
        torch.testing.assert_close(alone, reference[i : i + 1], rtol=1e-5, atol=1e-6)
    # the model does look at the real seconds
    changed = padded(12, 0.0)
    changed[0][0, 3] += 3.0
    assert not torch.allclose(model(*changed)[0], reference[0])


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    for shared in (True, False):
        model = CloudFormer(**{**SMALL, "shared_encoder": shared}).train()
        metrics = torch.randn(3, 9, 206)
        mask = torch.arange(9)[None, :] < torch.tensor([[9], [4], [1]])
        loss = log_cosh(model(metrics, mask), torch.tensor([0.3, 0.8, 0.95])).mean()
        loss.backward()
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


def test_outputs_are_performance_ratios_and_shapes_are_checked():
    model = CloudFormer(**SMALL, target_mean=0.9).eval()
    with torch.no_grad():
        out = model(torch.zeros(4, 5, 206))
        assert out.shape == (4,) and ((out > 0) & (out < 1)).all()
        # the output bias starts at logit(0.9): a blank run is predicted near the training mean
        assert float(torch.sigmoid(model.head[-1].bias)) == pytest.approx(0.9, abs=1e-6)
    with pytest.raises(ValueError, match=r"metrics of shape \[B, T, 206\]"):
        model(torch.zeros(2, 5, 205))
    with pytest.raises(ValueError, match="bool mask"):
        model(torch.zeros(2, 5, 206), torch.ones(2, 4, dtype=torch.bool))


def test_sinusoidal_positions_hand_values():
    codes = sinusoidal_positions(3, 4)
    # dim 4: frequencies 1 and 1/100 for sin (columns 0, 2) and cos (columns 1, 3)
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
        ]
    )
    torch.testing.assert_close(codes, expected)


def test_log_cosh_hand_cases():
    prediction = torch.tensor([0.5, 1.5, 0.0, 100.0, -100.0], requires_grad=True)
    target = torch.tensor([0.5, 0.5, 1.0, 0.0, 0.0])
    loss = log_cosh(prediction, target)
    expected = [
        0.0,
        math.log(math.cosh(1.0)),
        math.log(math.cosh(1.0)),
        100.0 - math.log(2.0),
        100.0 - math.log(2.0),
    ]
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert math.log(math.cosh(1.0)) == pytest.approx(0.4337808, abs=1e-7)
    loss.sum().backward()  # d/dx log cosh x = tanh x, finite even where cosh overflows float32
    torch.testing.assert_close(prediction.grad, torch.tanh(prediction.detach() - target))


def test_percentage_point_errors_hand_case():
    errors = percentage_point_errors([0.9, 0.5, 1.0], [1.0, 0.6, 0.7])
    assert errors["mae_pp"] == pytest.approx((10 + 10 + 30) / 3)
    assert errors["mse_pp"] == pytest.approx((100 + 100 + 900) / 3)


def test_lstm_ignores_padding():
    torch.manual_seed(2)
    model = RunLSTM(hidden=8, layers=2).eval()
    run = torch.randn(1, 6, 206)
    alone = model(run, torch.ones(1, 6, dtype=torch.bool))
    padded = torch.cat([run, torch.full((1, 10, 206), 7.0)], dim=1)
    mask = torch.arange(16)[None, :] < 6
    torch.testing.assert_close(model(padded, mask), alone, rtol=1e-5, atol=1e-6)


def test_aggregate_features_hand_case():
    metrics = np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 10.0]])
    features = aggregate_features(metrics)
    assert features.shape == (2 * 5 + 1,)
    np.testing.assert_allclose(features[:2], [3.0, 10 / 3], rtol=1e-6)  # means
    np.testing.assert_allclose(features[2:4], [np.sqrt(8 / 3), np.sqrt(200 / 9)], rtol=1e-6)  # stds
    np.testing.assert_allclose(features[4:10], [1.4, 0.0, 3.0, 0.0, 4.6, 8.0], rtol=1e-6)  # q10, q50, q90
    assert features[-1] == pytest.approx(math.log(3))
