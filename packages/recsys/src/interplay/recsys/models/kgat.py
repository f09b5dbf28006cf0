"""KGAT (Wang et al., KDD 2019, "KGAT: Knowledge Graph Attention Network for Recommendation").

The model works on the collaborative knowledge graph (CKG, Section 2.2) built by
:meth:`~interplay.recsys.data.kg.KGData.collaborative_graph`: users and entities are nodes, each
triple ``(h, r, t)`` is an edge ``t -> h``. It implements

* **TransR** (Section 3.1, Eq. 1-2): ``g(h, r, t) = ||W_r e_h + e_r - W_r e_t||^2`` and the pairwise
  loss ``L_KG = softplus(g(h, r, t) - g(h, r, t'))`` with a corrupted tail ``t'``, plus ``kg_l2``
  times the L2 norm of the projected embeddings (:func:`transr_distance`, :func:`transr_loss`).
* **attentive propagation** (Section 3.2, Eq. 3-5): ``pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r)``
  (:meth:`KGAT.attention_scores`), normalised by a softmax over the triples of each head
  (:func:`interplay.core.attention.graph.edge_softmax`, edges ``t -> h``), so that
  ``e_{N_h} = sum_t pi(h, r, t) e_t`` is a sparse product ``A E`` with ``A[h, t] = pi``.
* **aggregators** (Eq. 6-8): GCN ``LeakyReLU(W (e_h + e_{N_h}))``, GraphSAGE
  ``LeakyReLU(W [e_h || e_{N_h}])`` and Bi-Interaction ``LeakyReLU(W_1 (e_h + e_{N_h})) +
  LeakyReLU(W_2 (e_h ⊙ e_{N_h}))``; each layer applies message dropout and the next layer reads the
  dropped output, while the layer's output is L2-normalised (as the reference code).
* **prediction** (Section 3.3, Eq. 11-12): the final representation concatenates the layer-0
  embedding and every layer's output (64 + 64 + 32 + 16 = 176 for layers [64, 32, 16]); the score
  is ``e_u^T e_i``.
* **optimisation** (Section 3.4, Eq. 13-15): BPR ``softplus(-(y_ui - y_uj))`` with ``cf_l2`` times the
  L2 norm of the batch's final embeddings (divided by the batch size, as the reference code);
  alternating CF and KG phases with two Adam optimisers (the ``topk`` task).

Attention: the propagation reads :attr:`KGAT.attention` (one weight per CKG edge). Before the first
refresh it holds the reference code's initial matrix, the per-relation random-walk normalisation
``sum_r D_r^{-1} A_r`` (``1 / |{t : (h, r, t)}|`` per edge). :meth:`KGAT.refresh_attention` recomputes
the softmax attention from the current embeddings after each KG phase (Algorithm 1), and the
refreshed weights drive every later propagation. The reference TensorFlow code builds its
propagation matrix once, so its refreshed attention never reaches the propagation;
``attention_refresh="never"`` reproduces that behaviour (the initial matrix is used throughout).

KG phase cost: a TransR batch touches a few hundred rows of the ``[n_users + n_entities, d]``
embedding table, and the reference code takes ``n_ckg_edges / kg_batch_size`` such steps per epoch
(about 9,500 on Last-FM). With ``sparse_kg_gradients=True`` (default) the KG loss yields row-sparse
gradients and the ``topk`` task updates the table with :class:`torch.optim.SparseAdam` (Adam's
update on the rows a batch touches; their moments are kept per row), the relation parameters with
Adam: O(batch * d) per step instead of O(n_nodes * d). ``False`` keeps the reference code's dense
Adam update of the whole table at every KG step.

CF phase: the BPR loss reads the final representations of the batch's users and items only, so
the last layer is evaluated at those rows alone (from their own incoming edges); the result equals
the full propagation's rows.

Message passing is sparse: ``backend="pyg"`` computes the softmax with PyG and multiplies by the
attention matrix from :func:`~interplay.core.attention.graph.to_sparse_adjacency` as a CSR tensor
(its transpose is kept for the backward pass); ``backend="dgl"`` uses DGL's edge softmax and fused
``u_mul_e`` / ``sum`` message passing (:func:`~interplay.core.attention.graph.aggregate`). Both keep
memory at O(edges + nodes * d); no dense ``n x n`` matrix is ever formed.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention.graph import aggregate, edge_softmax, to_sparse_adjacency
from interplay.core.errors import ConfigError, DataError
from interplay.recsys.data.kg import CollaborativeGraph
from interplay.recsys.registry import REGISTRY

__all__ = [
    "AGGREGATORS",
    "KGAT",
    "KGATLayer",
    "SparsePropagation",
    "blocked_spmm",
    "bpr_loss",
    "project_by_relation",
    "transr_distance",
    "transr_loss",
    "transr_loss_projected",
]

BACKENDS = ("pyg", "dgl")
AGGREGATORS = ("bi", "gcn", "graphsage")
ATTENTION_REFRESH = ("epoch", "never")


def check_choice(value: Any, choices: Sequence[str], key: str) -> str:
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"model.params.{key} must be one of {valid}, got {value!r}")
    return value


def l2_half(*tensors: Tensor) -> Tensor:
    """``sum ||x||^2 / 2`` over the tensors (TensorFlow's ``l2_loss``, as the reference code)."""
    return sum(t.pow(2).sum() for t in tensors) / 2


def bpr_loss(users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """Eq. 13: ``mean softplus(-(e_u . e_i - e_u . e_j))`` (softplus form of ``-ln sigmoid``)."""
    return F.softplus(-((users * positives).sum(-1) - (users * negatives).sum(-1))).mean()


# --------------------------------------------------------------------------------------------------
# TransR
# --------------------------------------------------------------------------------------------------


def transr_distance(head: Tensor, relation: Tensor, tail: Tensor, projection: Tensor) -> Tensor:
    """Eq. 1: ``g(h, r, t) = ||W_r e_h + e_r - W_r e_t||^2`` per triple.

    ``head`` / ``tail`` are ``[B, d]``, ``relation`` ``[B, k]``, ``projection`` ``[B, d, k]`` (row
    vectors: ``W_r e`` is ``e @ projection``, the reference code's layout).
    """
    projected_head = torch.einsum("bd,bdk->bk", head, projection)
    projected_tail = torch.einsum("bd,bdk->bk", tail, projection)
    return (projected_head + relation - projected_tail).pow(2).sum(-1)


def transr_loss(
    head: Tensor,
    relation: Tensor,
    positive_tail: Tensor,
    negative_tail: Tensor,
    projection: Tensor,
    l2: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 2: ``mean softplus(g(h, r, t) - g(h, r, t'))`` plus ``l2`` times the L2 norm of the
    projected head, relation and tails divided by the batch size (the reference code's KG loss)."""
    stacked = torch.stack([head, positive_tail, negative_tail])  # one einsum for the three
    projected = torch.einsum("nbd,bdk->nbk", stacked, projection)
    return transr_loss_projected(*projected.unbind(0), relation, l2)


def transr_loss_projected(
    h: Tensor, t_pos: Tensor, t_neg: Tensor, relation: Tensor, l2: float = 0.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`transr_loss` from the projected head and tails ``W_r e`` (``[B, k]`` each)."""
    g_pos = (h + relation - t_pos).pow(2).sum(-1)
    g_neg = (h + relation - t_neg).pow(2).sum(-1)
    loss = F.softplus(g_pos - g_neg).mean()
    reg = l2 * l2_half(h, relation, t_pos, t_neg) / h.size(0)
    return loss + reg, {"transr": loss.detach(), "reg": reg.detach()}


def project_by_relation(x: Tensor, relations: Tensor, projection: Tensor) -> Tensor:
    """``x[..., b, :] @ projection[relations[b]]`` for every ``b`` (``[..., B, d] -> [..., B, k]``),
    with one matrix product per relation present instead of a ``[B, d, k]`` gather of matrices."""
    order = torch.argsort(relations, stable=True)
    counts = torch.bincount(relations, minlength=projection.size(0)).tolist()
    grouped = x[..., order, :]
    parts, start = [], 0
    for relation, count in enumerate(counts):
        if count:
            parts.append(grouped[..., start : start + count, :] @ projection[relation])
            start += count
    return torch.cat(parts, dim=-2)[..., torch.argsort(order), :]


# --------------------------------------------------------------------------------------------------
# Sparse propagation A @ X
# --------------------------------------------------------------------------------------------------


#: bytes of the dense operand one sparse product may gather from (about half a 32 MiB L3 cache)
GATHER_BUDGET = 16 << 20


def blocked_spmm(matrix: Tensor, x: Tensor, budget: int | None = None) -> Tensor:
    """``matrix @ x`` computed over column blocks of ``x`` small enough to stay in cache.

    A sparse product gathers rows of ``x`` at random; when ``x`` outgrows the last-level cache each
    gather misses (at Last-FM scale, 130k x 64 floats = 33 MB). Products over column blocks of
    ``budget`` bytes (default :data:`GATHER_BUDGET`) are exact (columns are independent) and about
    1.5x faster there on CPU.
    """
    rows, width = x.shape
    budget = GATHER_BUDGET if budget is None else budget
    block = max(8, budget // max(rows * x.element_size(), 1))
    if x.device.type != "cpu" or width <= block:
        return torch.sparse.mm(matrix, x)
    return torch.cat(
        [torch.sparse.mm(matrix, x[:, i : i + block].contiguous()) for i in range(0, width, block)], 1
    )


class _CSRMatmul(torch.autograd.Function):
    """``A @ x`` with a constant CSR ``A``; the backward multiplies by the stored CSR ``A^T``."""

    @staticmethod
    def forward(ctx: Any, matrix: Tensor, transposed: Tensor, x: Tensor) -> Tensor:
        ctx.transposed = transposed
        return blocked_spmm(matrix, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, blocked_spmm(ctx.transposed, grad.contiguous())


def _to_csr(coo: Tensor) -> Tensor:
    """A coalesced COO matrix as CSR, with int32 indices where they fit (MKL's native index type:
    int64 indices are converted on every product)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*Sparse CSR tensor support is in beta.*")
        csr = coo.to_sparse_csr()
        if coo.size(0) < 2**31 and coo._nnz() < 2**31:
            csr = torch.sparse_csr_tensor(
                csr.crow_indices().int(),
                csr.col_indices().int(),
                csr.values(),
                csr.shape,
                check_invariants=False,
            )
    return csr


class SparsePropagation(nn.Module):
    """``out[h] = sum over edges t -> h of weights[e] * x[t]`` on a fixed edge set.

    ``backend="pyg"``: the weights become a sparse matrix through
    :func:`~interplay.core.attention.graph.to_sparse_adjacency`. Constant weights (no gradient: the
    training-time attention) are converted once to CSR together with the transpose, and reused
    until the weights change (tracked by the tensor's version counter). Weights that require a
    gradient go through the differentiable COO product. ``backend="dgl"``: DGL's fused message
    passing (:func:`~interplay.core.attention.graph.aggregate`). Memory O(E + N d) in both.

    With ``rows``, only those destinations are computed, from their own incoming edges (found
    through a destination-sorted edge order), with :func:`~interplay.core.attention.graph.aggregate`
    on that edge subset: O(edges of the rows * d).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, backend: str = "pyg") -> None:
        super().__init__()
        self.backend = check_choice(backend, BACKENDS, "backend")
        self.num_nodes = num_nodes
        self.register_buffer("edge_index", edge_index, persistent=False)
        order = torch.argsort(edge_index[1], stable=True)
        pointer = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(edge_index[1], minlength=num_nodes), 0, out=pointer[1:])
        self.register_buffer("destination_order", order, persistent=False)
        self.register_buffer("destination_pointer", pointer, persistent=False)
        self._cache: tuple[tuple[int, int, torch.device], Tensor, Tensor] | None = None

    def _csr(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        key = (weights.data_ptr(), weights._version, weights.device)
        if self._cache is None or self._cache[0] != key:
            matrix = _to_csr(to_sparse_adjacency(weights, self.edge_index, self.num_nodes))
            transposed = _to_csr(to_sparse_adjacency(weights, self.edge_index.flip(0), self.num_nodes))
            self._cache = (key, matrix, transposed)
        return self._cache[1], self._cache[2]

    def incoming_edges(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(edge ids, local destination)`` of the edges entering ``rows`` (``local`` indexes ``rows``)."""
        starts, ends = self.destination_pointer[rows], self.destination_pointer[rows + 1]
        counts = ends - starts
        local = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
        offsets = torch.cumsum(counts, 0) - counts
        position = torch.arange(int(counts.sum()), device=rows.device) - offsets[local] + starts[local]
        return self.destination_order[position], local

    def forward(self, x: Tensor, weights: Tensor, rows: Tensor | None = None) -> Tensor:
        if rows is not None:
            edges, local = self.incoming_edges(rows)
            subset = torch.stack([self.edge_index[0, edges], local])
            return aggregate(x, weights[edges], subset, rows.numel(), backend=self.backend)
        if self.backend == "dgl":
            return aggregate(x, weights, self.edge_index, self.num_nodes, backend="dgl")
        if weights.requires_grad:
            return torch.sparse.mm(to_sparse_adjacency(weights, self.edge_index, self.num_nodes), x)
        matrix, transposed = self._csr(weights.detach())
        return _CSRMatmul.apply(matrix, transposed, x.contiguous())

    def _apply(self, fn, recurse=True):  # moving devices invalidates the cached matrices
        self._cache = None
        return super()._apply(fn, recurse)


# --------------------------------------------------------------------------------------------------
# Aggregation layers (Eq. 6-8)
# --------------------------------------------------------------------------------------------------


def _tf_init_(linear: nn.Linear) -> nn.Linear:
    """Xavier-uniform weight and bias as the reference code (``xavier_initializer`` on both)."""
    nn.init.xavier_uniform_(linear.weight)
    bound = math.sqrt(6.0 / (1 + linear.out_features))
    nn.init.uniform_(linear.bias, -bound, bound)
    return linear


class KGATLayer(nn.Module):
    """One aggregation layer: ``bi`` (Eq. 8), ``gcn`` (Eq. 6) or ``graphsage`` (Eq. 7)."""

    def __init__(self, aggregator: str, in_dim: int, out_dim: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.aggregator = check_choice(aggregator, AGGREGATORS, "aggregator")
        self.negative_slope = negative_slope
        width = 2 * in_dim if aggregator == "graphsage" else in_dim
        self.linear = _tf_init_(nn.Linear(width, out_dim))
        self.linear_product = _tf_init_(nn.Linear(in_dim, out_dim)) if aggregator == "bi" else None

    def forward(self, ego: Tensor, side: Tensor) -> Tensor:
        slope = self.negative_slope
        if self.aggregator == "graphsage":
            return F.leaky_relu(self.linear(torch.cat([ego, side], -1)), slope)
        out = F.leaky_relu(self.linear(ego + side), slope)
        if self.linear_product is not None:
            out = out + F.leaky_relu(self.linear_product(ego * side), slope)
        return out


# --------------------------------------------------------------------------------------------------
# KGAT
# --------------------------------------------------------------------------------------------------


@REGISTRY.models.register(
    "kgat", "KGAT: TransR + attentive propagation on the collaborative KG (Wang et al., KDD 2019)"
)
class KGAT(nn.Module):
    """KGAT on a :class:`~interplay.recsys.data.kg.CollaborativeGraph` (see the module docstring).

    ``layers`` are the output widths (``[64, 32, 16]``); ``message_dropout`` is one rate or one per
    layer; ``cf_l2`` / ``kg_l2`` are the reference code's ``regs``; ``pretrain`` optionally names an
    ``.npz`` with ``user_embed [n_users, embed_dim]`` and ``item_embed [n_items, embed_dim]`` (the
    reference code's BPR-MF initialisation, ``Model/pretrain/<dataset>/mf.npz``).
    """

    training_mode = "alternating"

    def __init__(
        self,
        graph: CollaborativeGraph,
        embed_dim: int = 64,
        relation_dim: int = 64,
        layers: Sequence[int] = (64, 32, 16),
        aggregator: str = "bi",
        message_dropout: float | Sequence[float] = 0.1,
        cf_l2: float = 1e-5,
        kg_l2: float = 1e-5,
        backend: str = "pyg",
        attention_refresh: str = "epoch",
        negative_slope: float = 0.2,
        pretrain: str | os.PathLike[str] | None = None,
        sparse_kg_gradients: bool = True,
        attention_chunk: int = 1 << 16,
    ) -> None:
        super().__init__()
        check_choice(aggregator, AGGREGATORS, "aggregator")
        self.backend = check_choice(backend, BACKENDS, "backend")
        self.attention_refresh = check_choice(attention_refresh, ATTENTION_REFRESH, "attention_refresh")
        layers = [int(w) for w in layers]
        if not layers or min(layers) < 1 or embed_dim < 1 or relation_dim < 1:
            raise ConfigError(f"model.params.layers and dims must be positive, got layers={layers}")
        rates = (
            [float(message_dropout)] * len(layers) if np.isscalar(message_dropout) else list(message_dropout)
        )
        if len(rates) != len(layers) or not all(0 <= p < 1 for p in rates):
            raise ConfigError(
                "model.params.message_dropout must be one rate or one per layer in [0, 1), "
                f"got {message_dropout}"
            )
        self.n_users, self.n_items, self.n_entities = graph.n_users, graph.n_items, graph.n_entities
        self.n_nodes, self.n_relations = graph.n_nodes, graph.n_relations
        self.embed_dim, self.relation_dim = embed_dim, relation_dim
        self.cf_l2, self.kg_l2 = cf_l2, kg_l2
        self.message_dropout = rates
        self.attention_chunk = attention_chunk
        self.sparse_kg_gradients = bool(sparse_kg_gradients)
        self.relation_ptr = graph.relation_ptr.tolist()

        self.embedding = nn.Parameter(torch.empty(self.n_nodes, embed_dim))
        self.relation_embedding = nn.Parameter(torch.empty(self.n_relations, relation_dim))
        self.projection = nn.Parameter(torch.empty(self.n_relations, embed_dim, relation_dim))
        widths = [embed_dim, *layers]
        self.layers = nn.ModuleList(
            KGATLayer(aggregator, widths[k], widths[k + 1], negative_slope) for k in range(len(layers))
        )
        self.output_dim = sum(widths)
        self.register_buffer("relations", graph.relations.clone(), persistent=False)
        self.propagation = SparsePropagation(graph.edge_index, self.n_nodes, backend)
        self.register_buffer("attention", self.initial_attention())
        self.reset_parameters()
        if pretrain is not None:
            self.load_pretrained(pretrain)

    # -- parameters ---------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        with torch.no_grad():
            for block in (self.embedding[: self.n_users], self.embedding[self.n_users :]):
                bound = math.sqrt(6.0 / (block.size(0) + block.size(1)))
                block.uniform_(-bound, bound)  # xavier per table, as the separate TF variables
            nn.init.xavier_uniform_(self.relation_embedding)
            r, d, k = self.projection.shape
            bound = math.sqrt(6.0 / (r * d + r * k))  # TF's fan-in / fan-out of a 3-D variable
            self.projection.uniform_(-bound, bound)

    def load_pretrained(self, path: str | os.PathLike[str]) -> None:
        """User and item embeddings from a BPR-MF ``.npz`` (``user_embed``, ``item_embed``)."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(f"pretrained embeddings not found: {file}")
        with np.load(file) as arrays:
            for key, rows in (("user_embed", self.n_users), ("item_embed", self.n_items)):
                if key not in arrays:
                    raise DataError(f"{file}: no array '{key}' (has {', '.join(arrays.files)})")
                if arrays[key].shape != (rows, self.embed_dim):
                    raise DataError(
                        f"{file}: {key} has shape {arrays[key].shape}, expected {(rows, self.embed_dim)}"
                    )
            users, items = arrays["user_embed"], arrays["item_embed"]
        with torch.no_grad():
            self.embedding[: self.n_users] = torch.from_numpy(users).float()
            self.embedding[self.n_users : self.n_users + self.n_items] = torch.from_numpy(items).float()

    def kg_parameters(self) -> list[nn.Parameter]:
        """Parameters of the KG loss (the second optimiser's)."""
        return [self.embedding, self.relation_embedding, self.projection]

    def sparse_kg_parameters(self) -> list[nn.Parameter]:
        """KG parameters whose KG-phase gradient is sparse (row-wise), for a sparse Adam."""
        return [self.embedding] if self.sparse_kg_gradients else []

    @property
    def heads(self) -> Tensor:
        return self.propagation.edge_index[1]

    @property
    def tails(self) -> Tensor:
        return self.propagation.edge_index[0]

    # -- attention ------------------------------------------------------------------------------------
    def initial_attention(self) -> Tensor:
        """The reference code's matrix before attention: ``1 / |{t : (h, r, t)}|`` per edge."""
        key = self.heads * self.n_relations + self.relations
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        return (1.0 / counts[inverse].double()).to(self.embedding.dtype)

    def attention_scores(self) -> Tensor:
        """Eq. 4: ``pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r)`` for every CKG edge, relation by
        relation and in chunks of ``attention_chunk`` edges (memory O(chunk * d))."""
        scores = []
        for r in range(self.n_relations):
            start, stop = self.relation_ptr[r], self.relation_ptr[r + 1]
            for lo in range(start, stop, self.attention_chunk):
                hi = min(stop, lo + self.attention_chunk)
                head = self.embedding[self.heads[lo:hi]] @ self.projection[r]
                tail = self.embedding[self.tails[lo:hi]] @ self.projection[r]
                scores.append((tail * torch.tanh(head + self.relation_embedding[r])).sum(-1))
        return torch.cat(scores) if scores else self.embedding.new_zeros(0)

    def compute_attention(self) -> Tensor:
        """Eq. 5: softmax of :meth:`attention_scores` over the triples of each head."""
        return edge_softmax(
            self.attention_scores(), self.propagation.edge_index, self.n_nodes, backend=self.backend
        )

    @torch.no_grad()
    def refresh_attention(self) -> None:
        """Recompute :attr:`attention` from the current parameters (``attention_refresh="never"``: no-op)."""
        if self.attention_refresh == "never":
            return
        self.attention.copy_(self.compute_attention())

    # -- propagation ---------------------------------------------------------------------------------
    def propagate(self, attention: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """Final representations (Eq. 9-11) ``[n_nodes, output_dim]`` under ``attention`` (default: the
        stored :attr:`attention`); with ``index``, only those rows (normalised and concatenated only
        where they are read, which saves the rest of the work and memory of the last steps)."""
        weights = self.attention if attention is None else attention
        rows, inverse = (None, None) if index is None else torch.unique(index, return_inverse=True)
        ego = self.embedding
        outputs = [ego if rows is None else ego[rows]]
        last = len(self.layers) - 1
        for k, (layer, rate) in enumerate(zip(self.layers, self.message_dropout)):
            if rows is not None and k == last:
                # the last layer is read only at ``rows``: compute it there, from those rows' edges
                side = self.propagation(ego, weights, rows=rows)
                out = F.dropout(layer(ego[rows], side), rate, self.training)
                outputs.append(F.normalize(out, dim=1))
                break
            side = self.propagation(ego, weights)
            ego = F.dropout(layer(ego, side), rate, self.training)
            outputs.append(F.normalize(ego if rows is None else ego[rows], dim=1))
        final = torch.cat(outputs, dim=1)
        return final if inverse is None else final[inverse]

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """``(users [n_users, D], items [n_items, D])`` for scoring ``e_u . e_i`` (Eq. 12)."""
        nodes = self.propagate()
        return nodes[: self.n_users], nodes[self.n_users : self.n_users + self.n_items]

    # -- losses -----------------------------------------------------------------------------------------
    def cf_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """BPR on the batch's users / positive / negative items (Eq. 13) plus ``cf_l2`` regularisation."""
        users = batch["users"]
        index = torch.cat([users, self.n_users + batch["pos_items"], self.n_users + batch["neg_items"]])
        u, pos, neg = self.propagate(index=index).split(users.numel())
        base = bpr_loss(u, pos, neg)
        reg = self.cf_l2 * l2_half(u, pos, neg) / users.numel()
        return base + reg, {"bpr": base.detach(), "reg": reg.detach()}

    def kg_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """TransR loss (Eq. 2) on a batch of CKG triples with corrupted tails."""
        relations = batch["relations"]
        nodes = torch.stack([batch["heads"], batch["pos_tails"], batch["neg_tails"]])
        embedded = F.embedding(nodes, self.embedding, sparse=self.sparse_kg_gradients)  # [3, B, d]
        h, t_pos, t_neg = project_by_relation(embedded, relations, self.projection).unbind(0)
        return transr_loss_projected(h, t_pos, t_neg, self.relation_embedding[relations], self.kg_l2)

    def extra_repr(self) -> str:
        return (
            f"nodes={self.n_nodes}, relations={self.n_relations}, edges={self.heads.numel()}, "
            f"backend={self.backend!r}, attention_refresh={self.attention_refresh!r}"
        )
