"""PaccMann MCA: multiscale convolutional attentive encoder for drug sensitivity, and PaccMann v2.

Manica et al. 2019, "Toward explainable anticancer compound sensitivity prediction via multimodal
attention-based convolutional encoders" (Mol. Pharmaceutics 16(12); arXiv:1904.11223), Section 2.3
and Figure 2; layer for layer as the authors' ``paccmann_predictor`` (``models/paccmann.py`` ``MCA``,
``utils/layers.py``):

* gene attention (Fig. 2B): ``α = softmax(W x + b)`` over the G genes (``W``: G x G), encoded
  expression ``x̃ = α ⊙ x``;
* SMILES: ``Embedding(vocab, 16)`` and three 1-D convolutions over the tokens (kernel widths 3, 5,
  11 spanning the whole embedding, 64 filters, ReLU, dropout, batch norm), giving four token streams
  (the embedding itself plus one per kernel width: the "multiscale" encodings);
* contextual attention (Fig. 2C), per stream ``s`` and head ``h``, with the encoded expression as
  context: ``u_t = v_h^T tanh(W_h e_t + U_h x̃ + b_h)``, ``β = softmax_t(u)``, output ``Σ_t β_t e_t``
  (heads [4, 4, 4, 4], attention size 64); padded tokens are masked out of the softmax;
* concatenation (4·16 + 3·4·64 = 832) -> batch norm -> dense [1024, 512] (Linear, batch norm, ReLU,
  dropout 0.5) -> Linear(1) -> sigmoid, regressing ln IC50 min-max scaled to [0, 1] with MSE.

The expression reaches the prediction only through the attention weights over SMILES tokens: the
dense head sees attention-pooled SMILES streams alone. The reference's ``gene_to_dense`` option (off
by default there and here) also concatenates the expression vector to the dense input.

:class:`PaccMannV2` is the repository's ``PaccMannV2`` (``models/paccmann_v2.py``): context attention in
both directions. Molecule heads attend over SMILES tokens with the raw expression as context (each
gene a context position, projected to the token positions by a Linear(G -> L) map); gene heads
attend over genes with each SMILES stream as context (a Linear(L -> G) map), and contribute ``α ⊙ x``
(the whole re-weighted profile) to the dense head. Because of those maps the SMILES length ``L`` is
fixed (``smiles_length``).

Why the attention is written here in torch and not through :func:`interplay.core.attention.attend`:
the score ``v^T tanh(W e_t + U c)`` is additive (Bahdanau) attention, not a dot product ``q·k``, so
none of core's SDPA / FlexAttention / Triton paths apply; and with one query per head (the context)
what remains after the scores is a masked softmax over ``L`` and a weighted sum, a couple of lines.

Differences from the reference, all deliberate: padded positions are masked out of the token
softmax (the reference lets padding take attention mass); the embedding's ``<pad>`` row is zero
(``padding_idx``); heads are computed together as one projection ``[.., H, A]`` (same function as
the reference's separate layers, faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MCA",
    "ContextAttention",
    "GeneAttention",
    "GeneContextAttention",
    "MoleculeContextAttention",
    "PaccMannV2",
    "masked_softmax",
]


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Softmax of ``scores`` along ``dim`` where ``mask`` is True; masked entries get exactly 0."""
    if mask is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~mask, float("-inf"))
    # a row with no valid entry would be NaN (0/0): give it zeros instead
    return torch.softmax(scores, dim=dim).nan_to_num(0.0)


class GeneAttention(nn.Module):
    """``α = softmax(W x + b)`` over genes; returns ``(α ⊙ x, α)`` (Fig. 2B)."""

    def __init__(self, n_genes: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.dense = nn.Linear(n_genes, n_genes)
        self.temperature = temperature

    def forward(self, expression: Tensor) -> tuple[Tensor, Tensor]:
        alphas = torch.softmax(self.dense(expression) / self.temperature, dim=-1)
        return alphas * expression, alphas


class ContextAttention(nn.Module):
    """Multi-head additive attention over tokens with one context vector per example (Fig. 2C).

    ``tokens [B, L, D]``, ``context [B, C]``, ``mask [B, L]`` (True = real token) ->
    ``(pooled [B, H * D], weights [B, H, L])``; each head's weights sum to 1 over the real tokens.
    """

    def __init__(self, token_dim: int, context_dim: int, heads: int, attention_size: int = 64) -> None:
        super().__init__()
        self.heads, self.attention_size = heads, attention_size
        self.token_projection = nn.Linear(token_dim, heads * attention_size)
        self.context_projection = nn.Linear(context_dim, heads * attention_size)
        # v_h: Linear(attention_size, 1, bias=False) per head, stacked
        bound = attention_size**-0.5
        self.score_vector = nn.Parameter(torch.empty(heads, attention_size).uniform_(-bound, bound))

    def forward(self, tokens: Tensor, context: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, length, _ = tokens.shape
        keys = self.token_projection(tokens).view(b, length, self.heads, self.attention_size)
        query = self.context_projection(context).view(b, 1, self.heads, self.attention_size)
        scores = (torch.tanh(keys + query) * self.score_vector).sum(-1)  # [B, L, H]
        weights = masked_softmax(scores, None if mask is None else mask[:, :, None], dim=1)
        weights = weights.transpose(1, 2)  # [B, H, L]
        pooled = torch.einsum("bhl,bld->bhd", weights, tokens)
        return pooled.reshape(b, -1), weights


class MoleculeContextAttention(nn.Module):
    """PaccMann v2 molecule heads: attention over tokens, context = the expression profile.

    Per head, each gene value is projected to ``A`` (Linear(1, A)) and the G gene positions are mapped
    to the L token positions (Linear(G, L)), giving a per-token context ``[L, A]`` that is added to the
    token projection. Computed in closed form, without the ``[B, G, A]`` intermediate.
    """

    def __init__(
        self, token_dim: int, n_genes: int, length: int, heads: int, attention_size: int = 64
    ) -> None:
        super().__init__()
        self.heads, self.attention_size, self.length = heads, attention_size, length
        self.token_projection = nn.Linear(token_dim, heads * attention_size)
        self.gene_weight = nn.Parameter(
            torch.empty(heads, attention_size).uniform_(-1.0, 1.0)
        )  # Linear(1, A)
        self.gene_bias = nn.Parameter(torch.empty(heads, attention_size).uniform_(-1.0, 1.0))
        bound = n_genes**-0.5
        self.position_weight = nn.Parameter(torch.empty(heads, length, n_genes).uniform_(-bound, bound))
        self.position_bias = nn.Parameter(torch.empty(heads, length).uniform_(-bound, bound))
        bound = attention_size**-0.5
        self.score_vector = nn.Parameter(torch.empty(heads, attention_size).uniform_(-bound, bound))

    def forward(
        self, tokens: Tensor, expression: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        b, length, _ = tokens.shape
        if length != self.length:
            raise ValueError(f"PaccMann v2 was built for SMILES of {self.length} tokens, got {length}")
        keys = self.token_projection(tokens).view(b, length, self.heads, self.attention_size)
        # Linear(G -> L)(x w + b) = (W x) w + (W 1) b + b_L, per head
        mixed = torch.einsum("hlg,bg->blh", self.position_weight, expression)  # [B, L, H]
        row_sums = self.position_weight.sum(-1).t()  # [L, H]
        context = (
            mixed[..., None] * self.gene_weight
            + (row_sums[..., None] * self.gene_bias)[None]
            + self.position_bias.t()[None, :, :, None]
        )
        scores = (torch.tanh(keys + context) * self.score_vector).sum(-1)  # [B, L, H]
        weights = masked_softmax(scores, None if mask is None else mask[:, :, None], dim=1).transpose(1, 2)
        pooled = torch.einsum("bhl,bld->bhd", weights, tokens)
        return pooled.reshape(b, -1), weights


class GeneContextAttention(nn.Module):
    """PaccMann v2 gene heads: attention over genes, context = one SMILES stream.

    Per head: each gene value -> Linear(1, A); tokens -> Linear(D, A), padded tokens zeroed, token
    positions mapped to genes by Linear(L, G). Output ``α ⊙ x`` per head, ``[B, H * G]``.
    """

    def __init__(
        self, token_dim: int, n_genes: int, length: int, heads: int, attention_size: int = 1
    ) -> None:
        super().__init__()
        self.heads, self.attention_size, self.length = heads, attention_size, length
        self.gene_weight = nn.Parameter(torch.empty(heads, attention_size).uniform_(-1.0, 1.0))
        self.gene_bias = nn.Parameter(torch.empty(heads, attention_size).uniform_(-1.0, 1.0))
        self.token_projection = nn.Linear(token_dim, heads * attention_size)
        bound = length**-0.5
        self.position_weight = nn.Parameter(torch.empty(heads, n_genes, length).uniform_(-bound, bound))
        self.position_bias = nn.Parameter(torch.empty(heads, n_genes).uniform_(-bound, bound))
        bound = attention_size**-0.5
        self.score_vector = nn.Parameter(torch.empty(heads, attention_size).uniform_(-bound, bound))

    def forward(
        self, expression: Tensor, tokens: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        b, length, _ = tokens.shape
        if length != self.length:
            raise ValueError(f"PaccMann v2 was built for SMILES of {self.length} tokens, got {length}")
        projected = self.token_projection(tokens).view(b, length, self.heads, self.attention_size)
        if mask is not None:
            projected = projected * mask[:, :, None, None]  # padding contributes no context
        context = torch.einsum("hgl,blha->bgha", self.position_weight, projected)
        context = context + self.position_bias.t()[None, :, :, None]
        reference = expression[:, :, None, None] * self.gene_weight + self.gene_bias  # [B, G, H, A]
        scores = (torch.tanh(reference + context) * self.score_vector).sum(-1)  # [B, G, H]
        weights = torch.softmax(scores, dim=1).transpose(1, 2)  # [B, H, G]
        return (weights * expression[:, None, :]).reshape(b, -1), weights


def _dense_stack(sizes: Sequence[int], dropout: float, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out) if batch_norm else nn.Identity()]
        layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class _SmilesEncoder(nn.Module):
    """Embedding + multiscale convolutions: the four token streams of MCA."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        filters: Sequence[int],
        kernel_sizes: Sequence[int],
        dropout: float,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        if len(filters) != len(kernel_sizes):
            raise ValueError(
                f"filters ({len(filters)}) and kernel_sizes ({len(kernel_sizes)}) differ in length"
            )
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd (same-length convolutions), got {list(kernel_sizes)}")
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=0)
        # Conv1d over tokens with the embedding as channels = the reference's Conv2d with a
        # [k, embedding_size] kernel; order conv -> ReLU -> dropout -> batch norm as there
        self.convolutions = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(embedding_size, n, k, padding=k // 2),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.BatchNorm1d(n) if batch_norm else nn.Identity(),
            )
            for n, k in zip(filters, kernel_sizes)
        )
        self.stream_dims = [embedding_size, *filters]

    def forward(self, smiles: Tensor) -> list[Tensor]:
        embedded = self.embedding(smiles)  # [B, L, E]
        channels_first = embedded.transpose(1, 2)
        return [embedded] + [conv(channels_first).transpose(1, 2) for conv in self.convolutions]


class MCA(nn.Module):
    """PaccMann MCA (see the module docstring). ``forward(batch) -> [B]`` scaled IC50 in [0, 1].

    ``batch``: ``smiles`` ``[B, L]`` token ids (0 = padding), ``expression`` ``[B, G]``.
    :meth:`explain` also returns the gene attention ``[B, G]`` and the token attention ``[B, L]``
    (mean over every head of every stream, as the reference reports it).
    """

    def __init__(
        self,
        vocab_size: int,
        n_genes: int,
        embedding_size: int = 16,
        filters: Sequence[int] = (64, 64, 64),
        kernel_sizes: Sequence[int] = (3, 5, 11),
        heads: Sequence[int] = (4, 4, 4, 4),
        attention_size: int = 64,
        dense_sizes: Sequence[int] = (1024, 512),
        dropout: float = 0.5,
        batch_norm: bool = True,
        final_activation: bool = True,
        gene_temperature: float = 1.0,
        gene_to_dense: bool = False,
    ) -> None:
        super().__init__()
        if len(heads) != len(filters) + 1:
            raise ValueError(f"heads needs one entry per stream ({len(filters) + 1}), got {list(heads)}")
        self.n_genes = n_genes
        self.smiles_encoder = _SmilesEncoder(
            vocab_size, embedding_size, filters, kernel_sizes, dropout, batch_norm
        )
        self.gene_attention = GeneAttention(n_genes, gene_temperature)
        self.context_attention = nn.ModuleList(
            ContextAttention(dim, n_genes, h, attention_size)
            for dim, h in zip(self.smiles_encoder.stream_dims, heads)
        )
        width = sum(dim * h for dim, h in zip(self.smiles_encoder.stream_dims, heads))
        self.gene_to_dense = gene_to_dense
        if gene_to_dense:
            width += n_genes
        self.batch_norm = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.dense = _dense_stack([width, *dense_sizes], dropout, batch_norm)
        self.output = nn.Linear(dense_sizes[-1] if dense_sizes else width, 1)
        self.final_activation = final_activation

    def explain(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        smiles, expression = batch["smiles"], batch["expression"]
        mask = smiles != 0
        encoded_genes, gene_weights = self.gene_attention(expression)
        streams = self.smiles_encoder(smiles)
        pooled, token_weights = [], []
        for stream, attention in zip(streams, self.context_attention):
            out, weights = attention(stream, encoded_genes, mask)
            pooled.append(out)
            token_weights.append(weights)
        if self.gene_to_dense:
            pooled.append(expression)
        hidden = self.dense(self.batch_norm(torch.cat(pooled, dim=1)))
        prediction = self.output(hidden).squeeze(-1)
        if self.final_activation:
            prediction = torch.sigmoid(prediction)
        heads = torch.cat(token_weights, dim=1)  # [B, total heads, L]
        return {
            "prediction": prediction,
            "gene_attention": gene_weights,
            "smiles_attention": heads.mean(1),
            "smiles_attention_heads": heads,
        }

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.explain(batch)["prediction"]


class PaccMannV2(nn.Module):
    """PaccMann v2 ("bimodal" MCA): molecule heads with gene context and gene heads with SMILES context.

    Defaults are the repository's ``paccmann_v2_params.json``: molecule heads [4, 4, 4, 4], gene heads
    [2, 2, 2, 2], SMILES attention size 64, gene attention size 1. Dense input width:
    ``4·E + 4·Σ filters + Σ gene_heads · G``.
    """

    def __init__(
        self,
        vocab_size: int,
        n_genes: int,
        smiles_length: int,
        embedding_size: int = 16,
        filters: Sequence[int] = (64, 64, 64),
        kernel_sizes: Sequence[int] = (3, 5, 11),
        molecule_heads: Sequence[int] = (4, 4, 4, 4),
        gene_heads: Sequence[int] = (2, 2, 2, 2),
        attention_size: int = 64,
        gene_attention_size: int = 1,
        dense_sizes: Sequence[int] = (1024, 512),
        dropout: float = 0.5,
        batch_norm: bool = True,
        final_activation: bool = True,
    ) -> None:
        super().__init__()
        if not len(molecule_heads) == len(gene_heads) == len(filters) + 1:
            raise ValueError(
                f"molecule_heads and gene_heads need one entry per stream ({len(filters) + 1}), "
                f"got {list(molecule_heads)} and {list(gene_heads)}"
            )
        self.smiles_length = smiles_length
        self.smiles_encoder = _SmilesEncoder(
            vocab_size, embedding_size, filters, kernel_sizes, dropout, batch_norm
        )
        dims = self.smiles_encoder.stream_dims
        self.molecule_attention = nn.ModuleList(
            MoleculeContextAttention(d, n_genes, smiles_length, h, attention_size)
            for d, h in zip(dims, molecule_heads)
        )
        self.gene_attention = nn.ModuleList(
            GeneContextAttention(d, n_genes, smiles_length, h, gene_attention_size)
            for d, h in zip(dims, gene_heads)
        )
        width = sum(d * h for d, h in zip(dims, molecule_heads)) + sum(gene_heads) * n_genes
        self.batch_norm = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.dense = _dense_stack([width, *dense_sizes], dropout, batch_norm)
        self.output = nn.Linear(dense_sizes[-1] if dense_sizes else width, 1)
        self.final_activation = final_activation

    def explain(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        smiles, expression = batch["smiles"], batch["expression"]
        mask = smiles != 0
        streams = self.smiles_encoder(smiles)
        encodings, token_weights, gene_weights = [], [], []
        for stream, attention in zip(streams, self.molecule_attention):
            out, weights = attention(stream, expression, mask)
            encodings.append(out)
            token_weights.append(weights)
        for stream, attention in zip(streams, self.gene_attention):
            out, weights = attention(expression, stream, mask)
            encodings.append(out)
            gene_weights.append(weights)
        hidden = self.dense(self.batch_norm(torch.cat(encodings, dim=1)))
        prediction = self.output(hidden).squeeze(-1)
        if self.final_activation:
            prediction = torch.sigmoid(prediction)
        tokens = torch.cat(token_weights, dim=1)
        genes = torch.cat(gene_weights, dim=1)
        return {
            "prediction": prediction,
            "gene_attention": genes.mean(1),
            "gene_attention_heads": genes,
            "smiles_attention": tokens.mean(1),
            "smiles_attention_heads": tokens,
        }

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.explain(batch)["prediction"]


def mse_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """The MCA objective: mean squared error on min-max scaled ln IC50."""
    return F.mse_loss(prediction, target)
