"""Graph attention: softmax over each node's incoming edges, and attention-weighted aggregation.

Implements the attention of GAT (Velickovic et al., 2018, "Graph Attention Networks", Eq. 1-6:
scores ``e_ij = LeakyReLU(a^T [W h_i || W h_j])``, ``alpha_ij = softmax_j(e_ij)`` over the
neighbours ``j`` of ``i``, ``h_i' = sum_j alpha_ij W h_j``, heads concatenated or averaged) and the
attentive propagation of KGAT (Wang et al., 2019, Eq. 3-5: ``e_{N_h} = sum_t pi(h, r, t) e_t`` with
``pi`` normalised by a softmax over the triples of head ``h``). KGAT computes its own scores
``pi(h, r, t)`` and uses :func:`edge_softmax` with edges ``t -> h``, then either :func:`aggregate`
or :func:`to_sparse_adjacency` (``A @ E``, ``A[h, t] = pi``).

Graphs are COO ``edge_index`` tensors ``[2, E]`` (int64) in the PyTorch Geometric convention:
row 0 holds the source ``j``, row 1 the destination ``i``; messages flow source -> destination and
the softmax runs over the incoming edges of each destination. Self loops and duplicate edges are
ordinary edges (a duplicate edge takes its own share of the softmax and contributes twice).

Functions:

- :func:`edge_softmax` (scores ``[E]`` or ``[E, H]`` -> weights of the same shape),
- :func:`aggregate` (``out[i] = sum_{e = (j -> i)} weights[e] * values[j]``),
- :func:`graph_attention` (both; returns ``(out, weights)``),
- :func:`to_sparse_adjacency` (weights as a coalesced ``torch.sparse_coo`` ``[N, N]`` matrix),
- :class:`GraphAttention` (a GAT layer built on them).

Backends (``backend=``), all differentiable and equal up to float rounding:

- ``"pyg"`` (default): ``torch_geometric.utils.softmax`` and ``scatter``; O(E) memory, any device.
  torch_geometric is imported on first use, so importing this module stays cheap.
- ``"dgl"``: ``dgl.nn.functional.edge_softmax`` and ``update_all(u_mul_e, sum)`` on a
  ``dgl.graph``, imported through :func:`interplay.core.compat.import_dgl`. The PyPI DGL wheel is
  CPU-only. Kept as a cross-check and for code ported from DGL (KGAT's reference PyTorch port).
- ``"math"``: the readable reference the tests trust, in plain torch and loop-free. It builds the
  dense ``[N, E]`` incidence matrix ``incidence[n, e] = (dst[e] == n)``, takes each node's maximum
  score from it, and sums ``exp`` and messages with matrix products: O(N E H) memory, for tests and
  small graphs only.

All backends subtract each destination's maximum score before ``exp`` (so scores of 1e4 do not
overflow). Nodes without incoming edges have no weights and aggregate to zeros. Scores of ``-inf``
get weight zero, but a destination whose incoming scores are all ``-inf`` gets NaN (as in PyG/DGL).
Input checks read ``edge_index.min()/max()`` and so synchronise with a GPU once per call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BACKENDS",
    "GraphAttention",
    "aggregate",
    "edge_softmax",
    "graph_attention",
    "to_sparse_adjacency",
]

BACKENDS = ("pyg", "dgl", "math")


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def edge_softmax(
    scores: Tensor, edge_index: Tensor, num_nodes: int | None = None, *, backend: str = "pyg"
) -> Tensor:
    """Softmax of ``scores`` over the incoming edges of each destination node.

    ``scores`` is ``[E]`` or ``[E, H]`` (one score per edge and head); the result has the same shape
    and sums to 1 over the edges entering each node that has any. ``num_nodes`` is the number of
    destination nodes (default: ``edge_index[1].max() + 1``).
    """
    _check_backend(backend)
    src, dst = _split_edge_index(edge_index)
    _check_edge_tensor(scores, "scores", edge_index.size(1), allowed_dims=(1, 2), what="[E] or [E, H]")
    num_nodes = _check_num_nodes(num_nodes, dst)
    _check_index_range(dst, num_nodes, "edge_index[1] (destination)", f"num_nodes={num_nodes}")
    _check_index_range(src, None, "edge_index[0] (source)", "")
    if scores.size(0) == 0:
        return scores.clone()
    if backend == "math":
        return _edge_softmax_math(scores, dst, num_nodes)
    if backend == "pyg":
        return _pyg_utils().softmax(scores, dst, num_nodes=num_nodes, dim=0)
    num_sources = max(num_nodes, int(src.max()) + 1)
    dgl = _import_dgl()
    graph = _dgl_graph(dgl, src, dst, num_sources, num_nodes)
    return dgl.nn.functional.edge_softmax(graph, scores, norm_by="dst")


def aggregate(
    values: Tensor, weights: Tensor, edge_index: Tensor, num_nodes: int, *, backend: str = "pyg"
) -> Tensor:
    """Attention-weighted sum of source values into destinations.

    ``out[i] = sum over edges e = (j -> i) of weights[e] * values[j]``. ``values`` is ``[N_src, D]``
    with ``weights`` ``[E]``, or ``[N_src, H, D]`` with ``weights`` ``[E, H]``; the result is
    ``[num_nodes, D]`` or ``[num_nodes, H, D]``, zeros for nodes without incoming edges. Weights are
    cast to ``values.dtype``.
    """
    _check_backend(backend)
    src, dst = _split_edge_index(edge_index)
    num_edges = edge_index.size(1)
    if not isinstance(values, Tensor) or values.dim() not in (2, 3):
        raise ValueError(f"values must be a [N_src, D] or [N_src, H, D] tensor, got {_describe(values)}")
    if values.dim() == 2:
        _check_edge_tensor(weights, "weights", num_edges, allowed_dims=(1,), what="[E] for values [N_src, D]")
    else:
        _check_edge_tensor(
            weights, "weights", num_edges, allowed_dims=(2,), what="[E, H] for values [N_src, H, D]"
        )
        if weights.size(1) != values.size(1):
            raise ValueError(
                f"weights has {weights.size(1)} heads but values has {values.size(1)} "
                f"(weights {tuple(weights.shape)}, values {tuple(values.shape)})"
            )
    num_nodes = _check_num_nodes(num_nodes, None)
    _check_index_range(dst, num_nodes, "edge_index[1] (destination)", f"num_nodes={num_nodes}")
    _check_index_range(src, values.size(0), "edge_index[0] (source)", f"values has {values.size(0)} rows")
    weights = weights.to(values.dtype)
    if num_edges == 0:
        # Keep the result attached to the autograd graph of values and weights.
        empty = values[:0].sum(0) + weights.sum()
        return empty.unsqueeze(0).expand(num_nodes, *values.shape[1:]).clone()
    if backend == "math":
        return _aggregate_math(values, weights, src, dst, num_nodes)
    if backend == "pyg":
        messages = values.index_select(0, src) * weights.unsqueeze(-1)
        return _pyg_utils().scatter(messages, dst, dim=0, dim_size=num_nodes, reduce="sum")
    dgl = _import_dgl()
    graph = _dgl_graph(dgl, src, dst, values.size(0), num_nodes)
    with graph.local_scope():
        graph.srcdata["value"] = values
        graph.edata["weight"] = weights.unsqueeze(-1)
        graph.update_all(
            dgl.function.u_mul_e("value", "weight", "message"), dgl.function.sum("message", "out")
        )
        return graph.dstdata["out"]


def graph_attention(
    scores: Tensor, values: Tensor, edge_index: Tensor, num_nodes: int, *, backend: str = "pyg"
) -> tuple[Tensor, Tensor]:
    """:func:`edge_softmax` then :func:`aggregate`; returns ``(out, attention weights)``."""
    weights = edge_softmax(scores, edge_index, num_nodes, backend=backend)
    return aggregate(values, weights, edge_index, num_nodes, backend=backend), weights


def to_sparse_adjacency(weights: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    """The attention weights as a coalesced sparse COO matrix ``A`` of shape ``[N, N]``.

    ``A[i, j]`` (row = destination, column = source) holds the weight of edge ``j -> i``, summed over
    duplicate edges, so ``A @ E`` equals ``aggregate(E, weights, edge_index, N)``. ``weights`` must
    be ``[E]``; for multi-head weights build one matrix per head (``weights[:, h]``). Differentiable
    with respect to ``weights``.
    """
    src, dst = _split_edge_index(edge_index)
    if isinstance(weights, Tensor) and weights.dim() == 2:
        raise ValueError(
            f"weights must be [E] for a sparse adjacency, got {tuple(weights.shape)}; "
            "for multi-head weights build one adjacency per head (weights[:, h])"
        )
    _check_edge_tensor(weights, "weights", edge_index.size(1), allowed_dims=(1,), what="[E]")
    num_nodes = _check_num_nodes(num_nodes, None)
    _check_index_range(dst, num_nodes, "edge_index[1] (destination)", f"num_nodes={num_nodes}")
    _check_index_range(src, num_nodes, "edge_index[0] (source)", f"num_nodes={num_nodes}")
    indices = torch.stack([dst, src])
    # The indices were range-checked above, so torch's own (costly) invariant check is redundant.
    adjacency = torch.sparse_coo_tensor(indices, weights, (num_nodes, num_nodes), check_invariants=False)
    return adjacency.coalesce()


# --------------------------------------------------------------------------------------------------
# Layer
# --------------------------------------------------------------------------------------------------


class GraphAttention(nn.Module):
    """A GAT layer (Velickovic et al., 2018, Eq. 1-6) on :func:`edge_softmax` and :func:`aggregate`.

    Per head ``k``: ``e_ij = LeakyReLU(a_k^T [W_k h_i || W_k h_j])`` for each edge ``j -> i``,
    ``alpha = edge_softmax(e)``, dropout on ``alpha`` (training only), ``h_i' = sum_j alpha_ij W_k
    h_j``. Heads are concatenated (``[N, heads * out_dim]``) or averaged (``[N, out_dim]``), then a
    bias is added. With ``add_self_loops`` existing self loops are replaced by exactly one per node,
    so every node attends to itself once (as in GAT and PyG's ``GATConv``). No output activation.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        heads: int = 1,
        *,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        bias: bool = True,
        backend: str = "pyg",
    ) -> None:
        super().__init__()
        _check_backend(backend)
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("heads", heads)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.out_dim, self.heads = in_dim, out_dim, heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.add_self_loops = add_self_loops
        self.backend = backend
        self.project = nn.Linear(in_dim, heads * out_dim, bias=False)
        # a = [a_destination || a_source]: a^T [W h_i || W h_j] = a_dst . W h_i + a_src . W h_j
        self.attention_destination = nn.Parameter(torch.empty(heads, out_dim))
        self.attention_source = nn.Parameter(torch.empty(heads, out_dim))
        if bias:
            self.bias = nn.Parameter(torch.empty(heads * out_dim if concat else out_dim))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.xavier_uniform_(self.attention_destination)
        nn.init.xavier_uniform_(self.attention_source)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, *, return_attention: bool = False) -> Any:
        """``x`` ``[N, in_dim]`` -> ``[N, heads * out_dim]`` (concat) or ``[N, out_dim]`` (mean).

        With ``return_attention=True`` returns ``(out, (edge_index, weights))``: the edges actually
        used (self loops included) and their attention weights ``[E, heads]`` before dropout.
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != self.in_dim:
            raise ValueError(f"x must be a [N, {self.in_dim}] tensor, got {_describe(x)}")
        num_nodes = x.size(0)
        src, dst = _split_edge_index(edge_index)
        _check_index_range(dst, num_nodes, "edge_index[1] (destination)", f"x has {num_nodes} rows")
        _check_index_range(src, num_nodes, "edge_index[0] (source)", f"x has {num_nodes} rows")
        if self.add_self_loops:
            edge_index = _with_self_loops(edge_index, num_nodes)
            src, dst = edge_index[0], edge_index[1]

        projected = self.project(x).view(num_nodes, self.heads, self.out_dim)
        score_destination = (projected * self.attention_destination).sum(-1)  # [N, H]
        score_source = (projected * self.attention_source).sum(-1)  # [N, H]
        scores = F.leaky_relu(score_destination[dst] + score_source[src], self.negative_slope)
        weights = edge_softmax(scores, edge_index, num_nodes, backend=self.backend)
        dropped = F.dropout(weights, p=self.dropout, training=self.training)
        out = aggregate(projected, dropped, edge_index, num_nodes, backend=self.backend)
        out = out.reshape(num_nodes, self.heads * self.out_dim) if self.concat else out.mean(dim=1)
        if self.bias is not None:
            out = out + self.bias
        return (out, (edge_index, weights)) if return_attention else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim}, {self.out_dim}, heads={self.heads}, concat={self.concat}, "
            f"dropout={self.dropout}, add_self_loops={self.add_self_loops}, backend={self.backend!r}"
        )


# --------------------------------------------------------------------------------------------------
# Math reference (backend="math")
# --------------------------------------------------------------------------------------------------


def _incidence(dst: Tensor, num_nodes: int) -> Tensor:
    """``[N, E]`` boolean: ``incidence[n, e]`` is True when edge ``e`` enters node ``n``."""
    nodes = torch.arange(num_nodes, device=dst.device)
    return nodes.unsqueeze(1) == dst.unsqueeze(0)


def _edge_softmax_math(scores: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    per_head = scores.unsqueeze(-1) if scores.dim() == 1 else scores  # [E, H]
    incidence = _incidence(dst, num_nodes)  # [N, E]
    # Each node's maximum incoming score; -inf for nodes without incoming edges (never read back).
    # Detached because softmax does not depend on the shift, so its gradient would only add rounding.
    masked = per_head.detach().unsqueeze(0).masked_fill(~incidence.unsqueeze(-1), float("-inf"))
    node_max = masked.amax(dim=1)  # [N, H]
    exponentials = torch.exp(per_head - node_max[dst])  # [E, H], each <= 1
    denominator = incidence.to(per_head.dtype) @ exponentials  # [N, H], >= 1 where defined
    weights = exponentials / denominator[dst]
    return weights.squeeze(-1) if scores.dim() == 1 else weights


def _aggregate_math(values: Tensor, weights: Tensor, src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    messages = values[src] * weights.unsqueeze(-1)  # [E, D] or [E, H, D]
    incidence = _incidence(dst, num_nodes).to(values.dtype)  # [N, E]
    return torch.einsum("ne,e...->n...", incidence, messages)


# --------------------------------------------------------------------------------------------------
# Backends and checks
# --------------------------------------------------------------------------------------------------


def _pyg_utils() -> Any:
    try:
        import torch_geometric.utils as pyg_utils
    except ImportError as error:
        raise ImportError(
            "graph attention backend 'pyg' needs torch_geometric: pip install torch_geometric "
            "(or pass backend='math' or backend='dgl')"
        ) from error
    return pyg_utils


def _import_dgl() -> Any:
    from interplay.core.compat.dgl import import_dgl

    return import_dgl()


def _dgl_graph(dgl: Any, src: Tensor, dst: Tensor, num_sources: int, num_destinations: int) -> Any:
    """A ``dgl.graph`` when sources and destinations share one node set (the usual case), else a
    bipartite block with ``num_sources`` source and ``num_destinations`` destination nodes."""
    if num_sources == num_destinations:
        return dgl.graph((src, dst), num_nodes=num_destinations)
    return dgl.create_block((src, dst), num_src_nodes=num_sources, num_dst_nodes=num_destinations)


def _with_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    keep = edge_index[0] != edge_index[1]
    nodes = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
    return torch.cat([edge_index[:, keep], nodes.unsqueeze(0).expand(2, num_nodes)], dim=1)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        valid = ", ".join(repr(name) for name in BACKENDS)
        raise ValueError(f"unknown graph attention backend {backend!r}; valid backends: {valid}")


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


def _split_edge_index(edge_index: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            "edge_index must be a [2, E] tensor (row 0 source, row 1 destination), "
            f"got {_describe(edge_index)}"
        )
    if edge_index.dtype != torch.long:
        raise ValueError(f"edge_index must have dtype torch.int64 (long), got {edge_index.dtype}")
    return edge_index[0], edge_index[1]


def _check_edge_tensor(
    tensor: Tensor, name: str, num_edges: int, *, allowed_dims: tuple[int, ...], what: str
) -> None:
    if not isinstance(tensor, Tensor) or tensor.dim() not in allowed_dims:
        raise ValueError(f"{name} must be {what}, got {_describe(tensor)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {tensor.dtype}")
    if tensor.size(0) != num_edges:
        raise ValueError(
            f"{name} has {tensor.size(0)} entries along dim 0 but edge_index has {num_edges} edges "
            f"({name} must be {what})"
        )


def _check_num_nodes(num_nodes: int | None, dst: Tensor | None) -> int:
    if num_nodes is None:
        if dst is None:
            raise ValueError("num_nodes must be given")
        return int(dst.max()) + 1 if dst.numel() else 0
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
    return num_nodes


def _check_index_range(index: Tensor, bound: int | None, name: str, bound_text: str) -> None:
    if index.numel() == 0:
        return
    low, high = int(index.min()), int(index.max())
    if low < 0:
        raise ValueError(f"{name} holds the negative node index {low}")
    if bound is not None and high >= bound:
        raise ValueError(f"{name} holds node index {high} but {bound_text}")
