"""EC / SC / HP / PAD heads: shapes, gradients, padding invariance, pooling (interplay.bio.ppi.models)."""

from __future__ import annotations

import pytest
import torch

import interplay.bio.ppi  # noqa: F401  (registers the models)
from interplay.bio.ppi.data import Complex
from interplay.bio.ppi.models import AttentionPool, ConvBertLayer, pad_residues
from interplay.bio.ppi.task import collate_complexes
from interplay.bio.registry import REGISTRY
from interplay.core.errors import ConfigError

PLM = {"dim": 16, "layers": 1, "heads": 2, "seed": 0}
NAMES = ["ppi-ec", "ppi-sc", "ppi-hp", "ppi-pad"]

SHORT = Complex("short", ("ACDEFGH",), ("KLMNPQ",), 7.0)
LONG = Complex("long", ("ACDEFGHIKLMNPQRSTVWY", "WWYYRRCC"), ("KLMNPQRSTV", "GGHHIIKK", "ACACAC"), 9.0)
MIDDLE = Complex("mid", ("MNPQRSTVWYACD",), ("EFGHIK", "LMNPQRS"), 6.0)


def build(name: str, **params):
    torch.manual_seed(0)
    if name == "ppi-pad":
        params.setdefault("cross_heads", 4)  # 16-wide test features: 4 heads of 4
    return REGISTRY.models.create(name, plm="random", plm_params=PLM, heads=4, **params)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.mark.parametrize("finetune", [False, True], ids=["frozen", "finetune"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_gradients(name, finetune):
    model = build(name, finetune=finetune, target_mean=7.5)
    batch = collate_complexes([SHORT, LONG, MIDDLE])
    out = model(batch)
    assert out.shape == (3,) and torch.isfinite(out).all()
    out.sum().backward()
    plm_params = [p for n, p in model.named_parameters() if n.startswith("plm.")]
    head_params = [p for n, p in model.named_parameters() if not n.startswith("plm.")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head_params)
    assert sum(float(p.grad.abs().sum()) for p in head_params) > 0
    if finetune:  # the language model trains with the head
        assert plm_params and sum(float(p.grad.abs().sum()) for p in plm_params if p.grad is not None) > 0
    else:  # frozen features: no PLM weights among the parameters or in checkpoints
        assert not plm_params and not any(k.startswith("plm.") for k in model.state_dict())


@pytest.mark.parametrize("finetune", [False, True], ids=["frozen", "finetune"])
@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_an_output(name, finetune):
    model = build(name, finetune=finetune).eval()
    with torch.no_grad():
        alone = torch.cat([model(collate_complexes([c])) for c in (SHORT, MIDDLE)])
        batched = model(collate_complexes([LONG, SHORT, MIDDLE]))[1:]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["ppi-hp", "ppi-pad"])
def test_ligand_and_receptor_are_kept_apart(name):
    # HP and PAD see which side a chain is on: swapping sides changes the prediction of HP
    model = build(name).eval()
    swapped = Complex("swap", MIDDLE.receptor, MIDDLE.ligand, 6.0)
    with torch.no_grad():
        a, b = model(collate_complexes([MIDDLE, swapped]))
    if name == "ppi-hp":
        assert not torch.isclose(a, b, atol=1e-4)
    else:  # PAD adds the two pooled sides with shared weights: symmetric by construction
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_ec_only_sees_the_union_of_residues():
    model = build("ppi-ec").eval()
    moved = Complex("moved", MIDDLE.ligand + MIDDLE.receptor[:1], MIDDLE.receptor[1:], 6.0)
    with torch.no_grad():
        a, b = model(collate_complexes([MIDDLE, moved]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_attention_pool_weights_sum_to_one_over_valid_residues():
    torch.manual_seed(0)
    pool = AttentionPool(8)
    x, mask = pad_residues([torch.randn(5, 8), torch.randn(2, 8), torch.randn(7, 8)])
    x[~mask] = 1e4  # padding content must not matter
    weights = pool.weights(x, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    expected = torch.stack([(weights[i, :n, None] * x[i, :n]).sum(0) for i, n in enumerate((5, 2, 7))])
    torch.testing.assert_close(pool(x, mask), expected)


def test_convbert_layer_shapes_and_padding():
    torch.manual_seed(0)
    layer = ConvBertLayer(16, heads=8, kernel_size=7).eval()
    assert layer.attn_heads == 4 and layer.head_dim == 2 and layer.ffn_in.out_features == 8
    short = torch.randn(1, 5, 16)
    padded = torch.cat([short, torch.randn(1, 4, 16)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 4])
    out = layer(padded, mask)
    assert out.shape == (1, 9, 16) and (out[0, 5:] == 0).all()
    torch.testing.assert_close(
        out[:, :5], layer(short, torch.ones(1, 5, dtype=torch.bool)), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ConfigError, match="odd"):
        ConvBertLayer(16, heads=8, kernel_size=6)


def test_convbert_can_be_dropped_and_options_are_checked():
    model = build("ppi-hp", convbert=False)
    assert model.convbert is None
    assert model(collate_complexes([SHORT])).shape == (1,)
    with pytest.raises(ConfigError, match="unknown pooling"):
        build("ppi-sc", pool="max")
    with pytest.raises(ConfigError, match="does not take"):
        REGISTRY.models.create("ppi-ec", plm="random", plm_params=PLM, heads=4, cross_heads=4)


def test_output_bias_starts_at_the_training_mean():
    model = build("ppi-sc", target_mean=8.25)
    assert model.output.bias.item() == 8.25 and model.output.weight.abs().max() <= 0.1
