"""RBTransformer and DGCNN: shapes, exact attention weights, gradients, electrode permutation symmetry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interplay.core.errors import ConfigError, DataError
from interplay.eeg.models import DGCNN, RBTransformer, distance_adjacency
from interplay.eeg.models.rbtransformer import ElectrodeAttention
from interplay.eeg.registry import REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def small_model(**kwargs) -> RBTransformer:
    torch.manual_seed(0)
    params = dict(n_channels=7, num_classes=3, dim=16, depth=2, heads=3, head_dim=5, ffn_dim=24)
    return RBTransformer(**{**params, **kwargs})


def test_paper_defaults_and_shapes():
    model = RBTransformer(n_channels=32)
    assert (model.dim, len(model.blocks), model.num_classes) == (128, 4, 2)
    attention = model.blocks[0].attention
    assert (attention.heads, attention.head_dim) == (6, 32)
    assert attention.qkv.bias is None and attention.qkv.out_features == 3 * 6 * 32
    assert attention.out.in_features == 192 and attention.out.out_features == 128
    ffn = model.blocks[0].ffn
    assert (ffn[0].in_features, ffn[0].out_features, ffn[3].out_features) == (128, 128, 128)
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [256, 256, 128, 2]
    assert model.electrode_embedding.shape == (1, 32, 128)
    model.eval()
    logits, maps = model(torch.randn(5, 32, 4), return_attention=True)
    assert logits.shape == (5, 2) and maps.shape == (4, 5, 6, 32, 32)


def test_attention_weights_are_exact_softmax_rows_and_match_the_normal_path():
    model = small_model().eval()
    x = torch.randn(4, 7, 4)
    plain = model(x)
    logits, maps = model(x, return_attention=True)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    assert maps.shape == (2, 4, 3, 7, 7)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, 3, 7))
    assert (maps >= 0).all()
    # the first block's weights by hand: softmax(q k^T / sqrt(head_dim)) of LN(token + identity)
    block = model.blocks[0]
    tokens = model.token_embedding(x) + model.electrode_embedding
    q, k, _ = block.attention.qkv(block.attention_norm(tokens)).view(4, 7, 3, 3, 5).permute(2, 0, 3, 1, 4)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(5), dim=-1)
    torch.testing.assert_close(maps[0], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.attention_maps(x), maps)


def test_attention_path_matches_in_training_mode_with_the_same_dropout_draws():
    model = small_model(dropout=0.3).train()
    x = torch.randn(3, 7, 4)
    torch.manual_seed(1)
    plain = model(x)
    torch.manual_seed(1)
    logits, _ = model(x, return_attention=True)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    model = small_model().train()
    x = torch.randn(6, 7, 4)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
        assert torch.isfinite(parameter.grad).all(), name


def test_permuting_electrodes_with_their_identities_changes_nothing_after_pooling():
    model = small_model().eval()
    x = torch.randn(5, 7, 4)
    pooled, maps = model.forward_features(x, return_attention=True)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    with torch.no_grad():
        model.electrode_embedding.copy_(model.electrode_embedding[:, perm])
    pooled_perm, maps_perm = model.forward_features(x[:, perm], return_attention=True)
    torch.testing.assert_close(pooled_perm, pooled, atol=1e-5, rtol=1e-5)
    # the attention maps permute along both electrode axes
    torch.testing.assert_close(maps_perm, maps[..., perm, :][..., perm], atol=1e-6, rtol=1e-5)
    # without moving the identities the output does change: they are what tells electrodes apart
    with torch.no_grad():
        model.electrode_embedding.copy_(model.electrode_embedding[:, torch.argsort(perm)])
    assert not torch.allclose(model.forward_features(x[:, perm]), pooled, atol=1e-4)


def test_electrode_attention_inner_width_can_differ_from_the_model_width():
    layer = ElectrodeAttention(dim=10, heads=4, head_dim=7)
    out, weights = layer(torch.randn(2, 5, 10), return_attention=True)
    assert out.shape == (2, 5, 10) and weights.shape == (2, 4, 5, 5)


def test_wrong_input_shape_and_bad_settings_are_user_errors():
    model = small_model()
    with pytest.raises(DataError, match="expected \\[batch, 7 electrodes, 4 bands\\]"):
        model(torch.randn(2, 8, 4))
    with pytest.raises(DataError, match="shape"):
        model(torch.randn(7, 4))
    with pytest.raises(ConfigError, match="model.params.depth"):
        RBTransformer(n_channels=4, depth=0)
    with pytest.raises(ConfigError, match="num_classes"):
        RBTransformer(n_channels=4, num_classes=1)


def test_registry_builds_models_by_name():
    model = REGISTRY.models.create(
        "rbtransformer", n_channels=14, num_classes=5, dim=8, depth=1, heads=2, head_dim=4
    )
    assert model(torch.randn(3, 14, 4)).shape == (3, 5)
    with pytest.raises(ConfigError, match="does not take"):
        REGISTRY.models.create("rbtransformer", n_channels=14, layers=2)


# -- DGCNN ----------------------------------------------------------------------------------------------
def test_distance_adjacency_is_a_gaussian_kernel_of_distances():
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
    adjacency = distance_adjacency(positions, sigma=1.0)
    assert adjacency[0, 1] == pytest.approx(math.exp(-0.5))
    assert adjacency[0, 2] == pytest.approx(math.exp(-2.0))
    assert adjacency[1, 2] == pytest.approx(math.exp(-2.5))
    np.testing.assert_array_equal(np.diag(adjacency), 0.0)
    np.testing.assert_allclose(adjacency, adjacency.T)
    with pytest.raises(DataError, match="positions"):
        distance_adjacency(np.zeros((3, 2)))


def test_dgcnn_chebyshev_terms_follow_the_recurrence_and_train():
    torch.manual_seed(0)
    positions = np.random.default_rng(0).normal(size=(6, 3))
    model = DGCNN(n_channels=6, num_classes=3, positions=positions, order=3, hidden=5)
    terms = model.chebyshev_terms()
    laplacian = model.scaled_laplacian()
    torch.testing.assert_close(terms[0], torch.eye(6))
    torch.testing.assert_close(terms[2], 2 * laplacian @ laplacian - torch.eye(6))
    # normalised Laplacian of a non-negative graph: eigenvalues of L~ = -D^-1/2 A D^-1/2 lie in [-1, 1]
    eigenvalues = torch.linalg.eigvalsh(laplacian)
    assert eigenvalues.min() >= -1 - 1e-5 and eigenvalues.max() <= 1 + 1e-5
    x = torch.randn(8, 6, 4)
    loss = torch.nn.functional.cross_entropy(model(x), torch.arange(8) % 3)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    with pytest.raises(DataError, match="DGCNN input"):
        model(torch.randn(2, 5, 4))
