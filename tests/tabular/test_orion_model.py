"""Orion-MSP model: the block-sparse band, the two attention paths, what may see what, shapes, gradients."""

from __future__ import annotations

import pytest
import torch

from interplay.core.attention import attend, block_sparse
from interplay.core.errors import DataError
from interplay.tabular.icl import PAPER_CONFIG, OrionMSP, OrionMSPConfig, SparseRowBlock
from interplay.tabular.icl.model import group_features

TINY = dict(
    embed_dim=16,
    col_num_blocks=1,
    col_nhead=2,
    col_num_inds=4,
    row_num_blocks=1,
    row_nhead=2,
    row_scales=(1, 4),
    perc_num_latents=4,
    perc_layers=1,
    icl_num_blocks=2,
    icl_nhead=2,
    max_features=40,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def tiny_model(seed: int = 0, **overrides) -> OrionMSP:
    torch.manual_seed(seed)
    return OrionMSP(OrionMSPConfig(**{**TINY, **overrides})).eval()


def table(n_rows=24, n_features=9, train_size=16, n_classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n_rows, n_features, generator=gen)
    y = torch.randint(0, n_classes, (2, train_size), generator=gen)
    return x, y


# -- the block-sparse mask -------------------------------------------------------------------------
def released_mask(length: int, n_global: int, window: int) -> torch.Tensor:
    """The released code's additive mask: ``(dist <= window) * 0.0 + (-inf)``, globals opened after."""
    idx = torch.arange(length)
    dist = (idx[:, None] - idx[None, :]).abs()
    additive = (dist <= window).float() * 0.0 + float("-inf")
    additive[:n_global, :] = 0.0
    additive[:, :n_global] = 0.0
    return additive


def test_mask_contains_the_band_and_the_released_formula_does_not():
    n_global, window, length = 6, 4, 30
    ours = block_sparse(n_global, window, n_random=0).dense(1, 1, length, length)[0, 0]
    released = released_mask(length, n_global, window) == 0.0
    for i in range(n_global, length):
        band = [j for j in range(n_global, length) if abs(i - j) <= window]
        assert ours[i, band].all(), f"query {i} must see its band {band}"
        # the released mask: a feature query sees the special tokens only, not even itself
        assert not released[i, band].any()
        assert released[i, :n_global].all()
    # consequence: with the released mask a feature token's output ignores its neighbours
    q, k, v = (torch.randn(1, 1, length, 8) for _ in range(3))
    out = attend(q, k, v, mask=released)
    v_changed = v.clone()
    v_changed[0, 0, 10] += 5.0  # a feature inside query 12's band
    changed = attend(q, k, v_changed, mask=released)
    torch.testing.assert_close(out[0, 0, 12], changed[0, 0, 12])
    ours_out = attend(q, k, v, mask=block_sparse(n_global, window))
    ours_changed = attend(q, k, v_changed, mask=block_sparse(n_global, window))
    assert not torch.allclose(ours_out[0, 0, 12], ours_changed[0, 0, 12])


@pytest.mark.parametrize("length", [7, 13, 40])
def test_banded_and_masked_paths_agree(length):
    torch.manual_seed(0)
    kwargs = dict(n_global=6, window=4, n_random=2, seed=1, rope_base=100_000.0)
    banded = SparseRowBlock(16, 2, 2, 0.0, path="banded", **kwargs)
    masked = SparseRowBlock(16, 2, 2, 0.0, path="masked", **kwargs)
    masked.load_state_dict(banded.state_dict())
    x = torch.randn(5, length, 16, requires_grad=True)
    out_b, out_m = banded(x), masked(x)
    torch.testing.assert_close(out_b, out_m, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out_b)
    grad_b = torch.autograd.grad(out_b, [x, *banded.parameters()], upstream)
    grad_m = torch.autograd.grad(out_m, [x, *masked.parameters()], upstream)
    for a, b in zip(grad_b, grad_m):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_auto_path_picks_banded_for_long_rows_on_cpu():
    block = SparseRowBlock(16, 2, 2, 0.0, n_global=6, window=4, n_random=2, seed=0, rope_base=1e5)
    cpu = torch.device("cpu")
    assert not block.uses_banded(100, cpu)
    assert block.uses_banded(2006, cpu)
    assert not block.uses_banded(2006, torch.device("cuda"))  # FlexAttention with the BlockMask there


def test_group_features_mean_pools_consecutive_features():
    cells = torch.arange(10.0).view(1, 5, 2)  # features 0..4, values (2f, 2f + 1)
    pooled = group_features(cells, 2)
    expected = torch.tensor([[[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]])  # last group: feature 4 alone
    torch.testing.assert_close(pooled, expected)
    assert group_features(cells, 16).shape == (1, 1, 2)
    torch.testing.assert_close(group_features(cells, 16)[0, 0], cells[0].mean(0))


# -- what may see what --------------------------------------------------------------------------------
def test_output_shapes_and_class_mask():
    model = tiny_model()
    x, y = table(n_rows=24, train_size=16)
    logits = model(x, y)
    assert logits.shape == (2, 8, 10)
    masked = model(x, y, n_classes=torch.tensor([3, 5]))
    assert torch.isinf(masked[0, :, 3:]).all() and torch.isfinite(masked[0, :, :3]).all()
    assert torch.isinf(masked[1, :, 5:]).all() and torch.isfinite(masked[1, :, :5]).all()
    torch.testing.assert_close(masked[0, :, :3], logits[0, :, :3])
    torch.testing.assert_close(model(x.double(), y), logits)  # float64 tables are cast to the model's dtype


def test_test_rows_do_not_influence_each_other():
    model = tiny_model()
    x, y = table(n_rows=24, train_size=16)
    base = model(x, y)
    changed = x.clone()
    changed[:, 20] = torch.randn(2, x.shape[2]) * 10  # one test row
    out = model(changed, y)
    others = [i for i in range(8) if i != 4]  # test row 4 is row 20
    torch.testing.assert_close(out[:, others], base[:, others], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, 4], base[:, 4])
    # one test row alone gets the prediction it gets among the others
    alone = model(torch.cat([x[:, :16], x[:, 18:19]], dim=1), y)
    torch.testing.assert_close(alone[:, 0], base[:, 2], rtol=1e-5, atol=1e-5)


def test_memory_is_written_by_training_rows_only():
    model = tiny_model()
    x, y = table(n_rows=24, train_size=16)
    x = x.requires_grad_()
    rows = model.row_interaction(model.column_embedding(model.standardize(x, 16), 16))
    memory = model.memory.memory(rows, 16)
    (grad,) = torch.autograd.grad(memory.sum(), x)
    assert grad[:, 16:].abs().max() == 0  # no path from a test row into the latents
    assert grad[:, :16].abs().max() > 0
    # and the training rows' embeddings themselves do not depend on test rows
    changed = x.detach().clone()
    changed[:, 16:] += 3.0
    rows_changed = model.row_interaction(model.column_embedding(model.standardize(changed, 16), 16))
    torch.testing.assert_close(rows_changed[:, :16], rows[:, :16].detach(), rtol=1e-5, atol=1e-5)


def test_column_statistics_come_from_training_rows():
    model = tiny_model()
    x, _ = table(n_rows=24, train_size=16)
    cells = model.column_embedding(model.standardize(x, 16), 16)
    changed = x.clone()
    changed[:, 16:] = changed[:, 16:] * 100 + 50  # wildly different test rows
    cells_changed = model.column_embedding(model.standardize(changed, 16), 16)
    torch.testing.assert_close(cells_changed[:, :16], cells[:, :16], rtol=1e-5, atol=1e-5)


def test_labels_are_injected_into_training_rows_only():
    model = tiny_model()
    rows = torch.randn(2, 10, model.config.icl_dim)
    y = torch.tensor([[0, 1, 2, 0], [1, 1, 0, 2]])
    injected = model.icl.inject_labels(rows, y)
    torch.testing.assert_close(injected[:, 4:], rows[:, 4:])
    torch.testing.assert_close(injected[:, :4], rows[:, :4] + model.icl.label_embedding(y))
    # the labels matter: permuting the training labels changes the predictions
    x, y_train = table()
    assert not torch.allclose(model(x, y_train), model(x, (y_train + 1) % 3))


def test_gradients_reach_every_parameter():
    model = tiny_model().train()
    x, y = table(n_rows=20, n_features=17, train_size=12)
    logits = model(x, y, n_classes=3)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), torch.randint(0, 3, (16,)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"parameters without gradient: {zero}"


def test_banded_path_inside_the_model_matches_the_masked_path():
    x, y = table(n_rows=12, n_features=30, train_size=8)
    banded = tiny_model(row_attention="banded")
    masked = tiny_model(row_attention="masked")
    masked.load_state_dict(banded.state_dict())
    torch.testing.assert_close(banded(x, y), masked(x, y), rtol=1e-4, atol=1e-5)


# -- inputs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x, y: (x[0], y), r"\[tables, rows, features\]"),
        (lambda x, y: (x, y[0]), "y_train must be"),
        (lambda x, y: (x.index_fill(1, torch.tensor([3]), float("nan")), y), "NaN"),
        (lambda x, y: (x, y + 10), "class indices"),
        (lambda x, y: (torch.randn(2, 24, 41), y), "max_features=40"),
        (lambda x, y: (x, torch.zeros(2, 30, dtype=torch.long)), "train rows"),
    ],
)
def test_bad_inputs_raise_data_errors(make, message):
    model = tiny_model()
    x, y = table()
    with pytest.raises(DataError, match=message):
        model(*make(x, y))


def test_config_validation_and_paper_defaults():
    with pytest.raises(ValueError, match="row_nhead"):
        OrionMSPConfig(embed_dim=16, row_nhead=3)
    with pytest.raises(ValueError, match="row_scales"):
        OrionMSPConfig(row_scales=())
    assert PAPER_CONFIG.row_scales == (1, 4, 16)
    assert (PAPER_CONFIG.row_num_cls, PAPER_CONFIG.row_num_global, PAPER_CONFIG.row_window) == (4, 2, 4)
    assert (PAPER_CONFIG.col_num_inds, PAPER_CONFIG.icl_num_blocks, PAPER_CONFIG.max_classes) == (128, 12, 10)
    assert PAPER_CONFIG.icl_dim == 4 * 128


def memory_spread(model: OrionMSP, x: torch.Tensor, train_size: int) -> tuple[float, float]:
    """Relative spread of the memory slots around their mean, and of the read's attention output
    across rows: ``||v - mean(v)|| / ||v||`` over slots / rows."""
    with torch.no_grad():
        rows = model.row_interaction(model.column_embedding(model.standardize(x, train_size), train_size))
        slots = model.memory.memory(rows, train_size)
        read = model.memory.read
        attended = read.attn(read.norm_q(rows), read.norm_kv(slots))

    def spread(v: torch.Tensor) -> float:
        return float((v - v.mean(1, keepdim=True)).norm() / v.norm())

    return spread(slots), spread(attended)


def test_memory_slots_start_distinct_so_the_read_depends_on_the_row():
    # With 0.02-scale latents (the old initialisation) every slot's residual was swamped by the same
    # average of the training rows: the slots collapsed onto one vector (spread ~0.04) and the read
    # returned the same vector to every row (spread ~1e-6), which kept pre-training on a
    # majority-class plateau. Unit-scale latents keep the slots apart from the first step.
    model = tiny_model()
    x, _ = table(n_rows=24, train_size=16)
    slots, attended = memory_spread(model, x, 16)
    assert slots > 0.5
    assert attended > 1e-3
    with torch.no_grad():
        model.memory.latents.mul_(0.02)  # the old initialisation
    old_slots, old_attended = memory_spread(model, x, 16)
    assert old_slots < 0.2 and old_attended < 1e-3
