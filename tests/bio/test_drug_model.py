"""PaccMann MCA / v2 layers and models: attention sums, hand-computed attention, reference forms,
padding, shapes and gradients; the fingerprint MLP."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import interplay.bio.drug  # noqa: F401  (registers the models)
from interplay.bio.drug.baselines import FingerprintMLP
from interplay.bio.drug.model import (
    MCA,
    ContextAttention,
    GeneAttention,
    GeneContextAttention,
    MoleculeContextAttention,
    PaccMannV2,
)
from interplay.bio.registry import REGISTRY

B, L, G, VOCAB = 5, 23, 17, 30
SMALL = dict(
    embedding_size=8, filters=(6, 5, 4), kernel_sizes=(3, 5, 11), attention_size=7, dense_sizes=(16, 8)
)


def _batch(seed: int = 0, lengths=(23, 9, 4, 15, 1)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    smiles = torch.zeros(B, L, dtype=torch.long)
    for i, n in enumerate(lengths):
        smiles[i, :n] = torch.randint(1, VOCAB, (n,), generator=g)
    return {
        "smiles": smiles,
        "expression": torch.randn(B, G, generator=g),
        "fingerprint": torch.randint(0, 2, (B, 64), generator=g).float(),
        "label": torch.rand(B, generator=g),
    }


def test_gene_attention_is_a_softmax_over_genes():
    layer = GeneAttention(G)
    x = torch.randn(B, G)
    encoded, alphas = layer(x)
    torch.testing.assert_close(alphas.sum(-1), torch.ones(B))
    torch.testing.assert_close(alphas, torch.softmax(layer.dense(x), -1))
    torch.testing.assert_close(encoded, alphas * x)


def test_context_attention_by_hand():
    # one head, attention size 1, token dim 1: u_t = v tanh(w e_t + b + u c + b_c)
    layer = ContextAttention(token_dim=1, context_dim=1, heads=1, attention_size=1)
    with torch.no_grad():
        layer.token_projection.weight.fill_(1.0)
        layer.token_projection.bias.fill_(0.0)
        layer.context_projection.weight.fill_(2.0)
        layer.context_projection.bias.fill_(0.5)
        layer.score_vector.fill_(3.0)
    tokens = torch.tensor([[[0.0], [1.0], [-1.0], [9.0]]])  # the last one is padding
    context = torch.tensor([[0.25]])  # u c + b_c = 1.0
    mask = torch.tensor([[True, True, True, False]])
    pooled, weights = layer(tokens, context, mask)
    scores = [3 * math.tanh(e + 1.0) for e in (0.0, 1.0, -1.0)]
    expected = torch.softmax(torch.tensor(scores), 0)
    torch.testing.assert_close(weights[0, 0, :3], expected)
    assert weights[0, 0, 3] == 0.0
    torch.testing.assert_close(pooled[0, 0], (expected * torch.tensor([0.0, 1.0, -1.0])).sum())


def test_context_attention_weights_sum_to_one_over_real_tokens():
    layer = ContextAttention(token_dim=8, context_dim=G, heads=4, attention_size=16)
    batch = _batch()
    mask = batch["smiles"] != 0
    _, weights = layer(torch.randn(B, L, 8), batch["expression"], mask)
    assert weights.shape == (B, 4, L)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 4))
    assert (weights.masked_select(~mask[:, None, :].expand_as(weights)) == 0).all()


def _naive_molecule_attention(layer: MoleculeContextAttention, tokens, expression, mask):
    """The reference's ContextAttentionLayer, head by head: context [B, G, 1] -> Linear(1, A) ->
    permute -> Linear(G, L) -> permute; tanh(reference + context) -> v -> softmax over tokens."""
    out, alphas = [], []
    for h in range(layer.heads):
        a = layer.attention_size
        w_tok = layer.token_projection.weight[h * a : (h + 1) * a]
        b_tok = layer.token_projection.bias[h * a : (h + 1) * a]
        reference = tokens @ w_tok.t() + b_tok  # [B, L, A]
        context = expression[:, :, None] * layer.gene_weight[h] + layer.gene_bias[h]  # [B, G, A]
        context = (context.transpose(1, 2) @ layer.position_weight[h].t() + layer.position_bias[h]).transpose(
            1, 2
        )
        scores = torch.tanh(reference + context) @ layer.score_vector[h]  # [B, L]
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        out.append((tokens * weights[..., None]).sum(1))
        alphas.append(weights)
    return torch.cat(out, 1), torch.stack(alphas, 1)


def _naive_gene_attention(layer: GeneContextAttention, expression, tokens, mask):
    out, alphas = [], []
    for h in range(layer.heads):
        a = layer.attention_size
        reference = expression[:, :, None] * layer.gene_weight[h] + layer.gene_bias[h]  # [B, G, A]
        w_tok = layer.token_projection.weight[h * a : (h + 1) * a]
        b_tok = layer.token_projection.bias[h * a : (h + 1) * a]
        context = (tokens @ w_tok.t() + b_tok) * mask[..., None]  # [B, L, A], padding zeroed
        context = (context.transpose(1, 2) @ layer.position_weight[h].t() + layer.position_bias[h]).transpose(
            1, 2
        )
        weights = torch.softmax(torch.tanh(reference + context) @ layer.score_vector[h], -1)  # [B, G]
        out.append(expression * weights)
        alphas.append(weights)
    return torch.cat(out, 1), torch.stack(alphas, 1)


def test_v2_attention_layers_match_the_reference_form():
    torch.manual_seed(0)
    batch = _batch()
    mask = batch["smiles"] != 0
    tokens = torch.randn(B, L, 6, dtype=torch.float64)
    expression = batch["expression"].double()
    molecule = MoleculeContextAttention(6, G, L, heads=3, attention_size=5).double()
    pooled, weights = molecule(tokens, expression, mask)
    ref_pooled, ref_weights = _naive_molecule_attention(molecule, tokens, expression, mask)
    torch.testing.assert_close(pooled, ref_pooled)
    torch.testing.assert_close(weights, ref_weights)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 3, dtype=torch.float64))
    genes = GeneContextAttention(6, G, L, heads=2, attention_size=3).double()
    encoded, gene_weights = genes(expression, tokens, mask)
    ref_encoded, ref_gene_weights = _naive_gene_attention(genes, expression, tokens, mask)
    torch.testing.assert_close(encoded, ref_encoded)
    torch.testing.assert_close(gene_weights, ref_gene_weights)
    torch.testing.assert_close(gene_weights.sum(-1), torch.ones(B, 2, dtype=torch.float64))


@pytest.mark.parametrize("name", ["mca", "paccmann-v2"])
def test_models_shapes_gradients_and_attention_sums(name):
    torch.manual_seed(0)
    kwargs = dict(vocab_size=VOCAB, n_genes=G, **SMALL)
    if name == "paccmann-v2":
        kwargs.update(smiles_length=L, molecule_heads=(2, 1, 3, 2), gene_heads=(1, 2, 1, 1))
    else:
        kwargs.update(heads=(2, 1, 3, 2), gene_to_dense=True)
    model = REGISTRY.models.create(name, **kwargs)
    batch = _batch()
    prediction = model(batch)
    assert prediction.shape == (B,) and ((prediction > 0) & (prediction < 1)).all()
    loss = nn.functional.mse_loss(prediction, batch["label"])
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    model.eval()
    out = model.explain(batch)
    mask = batch["smiles"] != 0
    assert out["smiles_attention_heads"].shape == (B, 8, L)
    torch.testing.assert_close(out["smiles_attention_heads"].sum(-1), torch.ones(B, 8))
    torch.testing.assert_close(out["smiles_attention"].sum(-1), torch.ones(B))
    assert (out["smiles_attention"][~mask] == 0).all()
    torch.testing.assert_close(out["gene_attention"].sum(-1), torch.ones(B))
    assert out["gene_attention"].shape == (B, G)


def test_mca_ignores_padding_length():
    torch.manual_seed(0)
    model = MCA(VOCAB, G, heads=(2, 1, 1, 1), **SMALL).eval()
    batch = _batch()
    longer = dict(batch, smiles=torch.cat([batch["smiles"], torch.zeros(B, 9, dtype=torch.long)], 1))
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(longer))


def test_mca_paper_width():
    # 4 x 16 (embedding heads) + 3 x 4 x 64 (conv heads) = 832 inputs to the dense head
    model = MCA(VOCAB, 2128)
    assert model.batch_norm.num_features == 832
    assert model.gene_attention.dense.weight.shape == (2128, 2128)
    assert [m.out_features for m in model.dense if isinstance(m, nn.Linear)] == [1024, 512]
    assert MCA(VOCAB, 2128, gene_to_dense=True).batch_norm.num_features == 832 + 2128
    v2 = PaccMannV2(VOCAB, 50, smiles_length=40)
    assert v2.batch_norm.num_features == 832 + 8 * 50


def test_v2_needs_its_smiles_length():
    model = PaccMannV2(VOCAB, G, smiles_length=L + 1, **SMALL)
    with pytest.raises(ValueError, match="built for SMILES of 24 tokens"):
        model(_batch())


def test_fingerprint_mlp():
    model = FingerprintMLP(64, G, hidden_sizes=(32, 16))
    batch = _batch()
    prediction = model(batch)
    assert prediction.shape == (B,)
    prediction.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert REGISTRY.models.get("fp-lightgbm").tags == ("gbdt",)
