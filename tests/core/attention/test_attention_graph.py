"""Graph attention (interplay.core.attention.graph) and the DGL import shim (interplay.core.compat).

The "math" backend is the ground truth; it is itself checked against a case computed by hand.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from interplay.core.attention.graph import (
    BACKENDS,
    GraphAttention,
    aggregate,
    edge_softmax,
    graph_attention,
    to_sparse_adjacency,
)
from interplay.core.compat import dgl as compat_dgl
from interplay.core.compat import dgl_available, import_dgl

FAST_BACKENDS = ["pyg", "dgl"]
needs_dgl = pytest.mark.skipif(not dgl_available(), reason="dgl cannot be imported")


def _skip_without(backend: str) -> None:
    if backend == "dgl" and not dgl_available():
        pytest.skip("dgl cannot be imported")
    if backend == "pyg":
        pytest.importorskip("torch_geometric")


def random_graph(num_nodes: int, num_edges: int, seed: int = 0, loops_and_duplicates: bool = True):
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    if loops_and_duplicates:
        loops = torch.arange(3).repeat(2, 1)  # self loops 0->0, 1->1, 2->2
        duplicates = edge_index[:, :5]  # five edges twice
        edge_index = torch.cat([edge_index, loops, duplicates], dim=1)
    return edge_index


def incoming_sums(weights: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    per_head = weights.reshape(weights.size(0), -1)
    return torch.zeros(num_nodes, per_head.size(1), dtype=weights.dtype).index_add_(0, dst, per_head)


# --------------------------------------------------------------------------------------------------
# edge_softmax
# --------------------------------------------------------------------------------------------------


# 3 nodes, 4 edges: node 1 receives from 0, 2 and itself; node 0 from 1; node 2 from nobody.
TINY_EDGES = torch.tensor([[0, 2, 1, 1], [1, 1, 1, 0]])
TINY_SCORES = torch.tensor([0.0, math.log(2.0), math.log(5.0), 7.0])
# Node 1: exp(scores) = 1, 2, 5 -> 1/8, 2/8, 5/8; node 0 has one edge -> 1.
TINY_WEIGHTS = torch.tensor([1 / 8, 2 / 8, 5 / 8, 1.0])
TINY_VALUES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
# out[1] = 1/8 [1, 0] + 2/8 [2, 2] + 5/8 [0, 1]; out[0] = values[1]; node 2 has no incoming edge.
TINY_OUT = torch.tensor([[0.0, 1.0], [5 / 8, 9 / 8], [0.0, 0.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_graph_by_hand(backend):
    _skip_without(backend)
    out, weights = graph_attention(TINY_SCORES, TINY_VALUES, TINY_EDGES, 3, backend=backend)
    torch.testing.assert_close(weights, TINY_WEIGHTS)
    torch.testing.assert_close(out, TINY_OUT)


@pytest.mark.parametrize("heads", [None, 4])
@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_softmax_sums_to_one_and_matches_math(backend, heads):
    _skip_without(backend)
    num_nodes, num_edges = 50, 300
    edge_index = random_graph(num_nodes, num_edges, loops_and_duplicates=False)
    shape = (num_edges,) if heads is None else (num_edges, heads)
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3
    weights = edge_softmax(scores, edge_index, num_nodes, backend=backend)
    assert weights.shape == scores.shape
    assert (weights >= 0).all()

    sums = incoming_sums(weights, edge_index[1], num_nodes)
    has_incoming = torch.bincount(edge_index[1], minlength=num_nodes) > 0
    assert not has_incoming.all(), "the graph should have isolated destinations"
    torch.testing.assert_close(sums[has_incoming], torch.ones_like(sums[has_incoming]))
    torch.testing.assert_close(sums[~has_incoming], torch.zeros_like(sums[~has_incoming]))
    torch.testing.assert_close(weights, edge_softmax(scores, edge_index, num_nodes, backend="math"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_softmax_huge_scores_are_stable(backend):
    _skip_without(backend)
    edge_index = torch.tensor([[0, 1, 2, 0, 1], [1, 1, 1, 2, 2]])
    scores = torch.tensor([[1e4, -1e4], [1e4 - 1.0, -1e4], [1e4 - 2.0, -1e4 + 1.0], [1e4, 3e4], [-1e4, 3e4]])
    weights = edge_softmax(scores, edge_index, 3, backend=backend)
    assert torch.isfinite(weights).all()
    expected_node1 = torch.softmax(torch.tensor([0.0, -1.0, -2.0]), dim=0)
    torch.testing.assert_close(weights[:3, 0], expected_node1)
    torch.testing.assert_close(weights[:3, 1], torch.softmax(torch.tensor([0.0, 0.0, 1.0]), dim=0))
    torch.testing.assert_close(weights[3:, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(weights[3:, 1], torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_graph_and_isolated_nodes(backend):
    _skip_without(backend)
    empty = torch.zeros(2, 0, dtype=torch.long)
    scores = torch.zeros(0, 2, requires_grad=True)
    values = torch.randn(4, 2, 3, requires_grad=True)
    out, weights = graph_attention(scores, values, empty, 4, backend=backend)
    assert weights.shape == (0, 2)
    assert out.shape == (4, 2, 3)
    assert (out == 0).all()
    out.sum().backward()  # still attached to the graph
    assert edge_softmax(torch.zeros(0), empty, backend=backend).shape == (0,)

    # Nodes 3 and 4 have no incoming edges (node 4 has no edges at all): zero rows.
    edge_index = torch.tensor([[3, 0, 1], [0, 1, 2]])
    out, _ = graph_attention(torch.randn(3), torch.randn(5, 2), edge_index, 5, backend=backend)
    assert (out[3:] == 0).all() and (out[:3] != 0).all()


def test_num_nodes_defaults_to_largest_destination():
    edge_index = torch.tensor([[5, 0], [1, 2]])
    assert edge_softmax(torch.randn(2), edge_index, backend="math").shape == (2,)
    torch.testing.assert_close(edge_softmax(torch.randn(2), edge_index), torch.ones(2))


# --------------------------------------------------------------------------------------------------
# aggregate, gradients, backend parity
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [None, 3])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_aggregate_matches_math(backend, heads):
    _skip_without(backend)
    num_nodes, dim = 20, 5
    edge_index = random_graph(num_nodes, 60, seed=2)
    num_edges = edge_index.size(1)
    generator = torch.Generator().manual_seed(3)
    if heads is None:
        values, weights = torch.randn(num_nodes, dim, generator=generator), torch.rand(num_edges)
    else:
        values = torch.randn(num_nodes, heads, dim, generator=generator)
        weights = torch.rand(num_edges, heads, generator=generator)
    out = aggregate(values, weights, edge_index, num_nodes, backend=backend)
    torch.testing.assert_close(out, aggregate(values, weights, edge_index, num_nodes, backend="math"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bipartite_sources(backend):
    # 6 source rows feeding 3 destinations: values and destinations are different node sets.
    _skip_without(backend)
    edge_index = torch.tensor([[5, 4, 0, 2], [0, 0, 2, 2]])
    values = torch.randn(6, 2, 4)
    out, weights = graph_attention(torch.randn(4, 2), values, edge_index, 3, backend=backend)
    assert out.shape == (3, 2, 4)
    expected = weights[0, :, None] * values[5] + weights[1, :, None] * values[4]
    torch.testing.assert_close(out[0], expected)


@pytest.mark.parametrize("backend", ["pyg", "math"])
def test_gradcheck(backend):
    _skip_without(backend)
    # Small graph (with a self loop, duplicate edges and isolated node 4): gradcheck runs the
    # function twice per input element. The math backend is checked in fast mode (a random projection).
    edge_index = torch.tensor([[0, 1, 2, 3, 0, 2, 2, 1, 4], [1, 2, 0, 0, 1, 2, 3, 3, 3]])
    num_edges = edge_index.size(1)
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(num_edges, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    values = torch.randn(5, 2, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    fast_mode = backend == "math"

    def attention(scores, values):
        return graph_attention(scores, values, edge_index, 5, backend=backend)

    assert torch.autograd.gradcheck(attention, (scores, values), fast_mode=fast_mode)
    weights = torch.rand(num_edges, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w, v: aggregate(v, w, edge_index, 5, backend=backend), (weights, values), fast_mode=fast_mode
    )


@needs_dgl
def test_pyg_and_dgl_agree_on_values_and_gradients():
    num_nodes, heads, dim = 30, 4, 6
    edge_index = random_graph(num_nodes, 120, seed=6)
    num_edges = edge_index.size(1)
    assert (edge_index[0] == edge_index[1]).any()
    assert edge_index.t().unique(dim=0).size(0) < num_edges  # duplicate edges present
    generator = torch.Generator().manual_seed(7)
    scores = torch.randn(num_edges, heads, generator=generator, dtype=torch.float64) * 4
    values = torch.randn(num_nodes, heads, dim, generator=generator, dtype=torch.float64)
    probe_out = torch.randn(num_nodes, heads, dim, generator=generator, dtype=torch.float64)
    probe_weights = torch.randn(num_edges, heads, generator=generator, dtype=torch.float64)

    results = {}
    for backend in BACKENDS:
        s, v = scores.clone().requires_grad_(), values.clone().requires_grad_()
        out, weights = graph_attention(s, v, edge_index, num_nodes, backend=backend)
        ((out * probe_out).sum() + (weights * probe_weights).sum()).backward()
        results[backend] = (out, weights, s.grad, v.grad)
    for name, index in [("out", 0), ("weights", 1), ("scores.grad", 2), ("values.grad", 3)]:
        torch.testing.assert_close(results["dgl"][index], results["pyg"][index], msg=name)
        torch.testing.assert_close(results["pyg"][index], results["math"][index], msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["pyg", "math"])  # the PyPI DGL wheel is CPU-only
def test_cuda_matches_cpu(backend):
    _skip_without(backend)
    edge_index = random_graph(40, 200, seed=11)
    scores = torch.randn(edge_index.size(1), 4, requires_grad=True)
    values = torch.randn(40, 4, 8, requires_grad=True)
    outputs = []
    for device in ("cpu", "cuda"):
        s, v = scores.detach().to(device).requires_grad_(), values.detach().to(device).requires_grad_()
        out, weights = graph_attention(s, v, edge_index.to(device), 40, backend=backend)
        (out.sin().sum() + weights.square().sum()).backward()
        outputs.append([t.detach().cpu() for t in (out, weights, s.grad, v.grad)])
    for cpu, cuda in zip(*outputs):
        torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-5)
    adjacency = to_sparse_adjacency(weights[:, 0].detach(), edge_index.cuda(), 40)
    torch.testing.assert_close(
        (adjacency @ v[:, 0].detach()).cpu(), outputs[0][0][:, 0], rtol=1e-4, atol=1e-5
    )


# --------------------------------------------------------------------------------------------------
# to_sparse_adjacency
# --------------------------------------------------------------------------------------------------


def test_sparse_adjacency_matmul_equals_aggregate():
    num_nodes = 25
    edge_index = random_graph(num_nodes, 80, seed=8)
    scores = torch.randn(edge_index.size(1), dtype=torch.float64, requires_grad=True)
    embeddings = torch.randn(num_nodes, 7, dtype=torch.float64, requires_grad=True)
    weights = edge_softmax(scores, edge_index, num_nodes)

    adjacency = to_sparse_adjacency(weights, edge_index, num_nodes)
    assert adjacency.layout == torch.sparse_coo and adjacency.is_coalesced()
    assert adjacency.shape == (num_nodes, num_nodes)
    assert adjacency._nnz() == edge_index.t().unique(dim=0).size(0)  # duplicates summed
    propagated = adjacency @ embeddings
    expected = aggregate(embeddings, weights, edge_index, num_nodes)
    torch.testing.assert_close(propagated, expected)
    # row = destination: a single edge 3 -> 1 sits at A[1, 3]
    single = to_sparse_adjacency(torch.tensor([0.5]), torch.tensor([[3], [1]]), 4).to_dense()
    assert single[1, 3] == 0.5 and single.sum() == 0.5

    grads = torch.autograd.grad(propagated.square().sum(), (scores, embeddings), retain_graph=True)
    expected_grads = torch.autograd.grad(expected.square().sum(), (scores, embeddings))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


# --------------------------------------------------------------------------------------------------
# GraphAttention
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("concat", [True, False])
def test_graph_attention_layer_shapes_and_grads(concat):
    torch.manual_seed(0)
    layer = GraphAttention(8, 5, heads=3, concat=concat, dropout=0.2)
    x = torch.randn(12, 8)
    edge_index = random_graph(12, 30, seed=9)
    out, (used_edges, weights) = layer(x, edge_index, return_attention=True)
    assert out.shape == ((12, 15) if concat else (12, 5))
    # existing self loops are replaced by exactly one per node
    loops = used_edges[0] == used_edges[1]
    assert sorted(used_edges[0, loops].tolist()) == list(range(12))
    assert weights.shape == (used_edges.size(1), 3)
    torch.testing.assert_close(incoming_sums(weights, used_edges[1], 12), torch.ones(12, 3))
    out.square().mean().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_graph_attention_layer_without_self_loops_keeps_isolated_nodes_at_bias():
    layer = GraphAttention(4, 2, heads=2, add_self_loops=False)
    with torch.no_grad():
        layer.bias.fill_(0.25)
    out = layer(torch.randn(5, 4), torch.tensor([[0, 1], [1, 2]]))
    torch.testing.assert_close(out[[0, 3, 4]], torch.full((3, 4), 0.25))


@pytest.mark.parametrize("backend", ["dgl", "math"])
def test_graph_attention_layer_backends_agree(backend):
    _skip_without(backend)
    torch.manual_seed(1)
    reference = GraphAttention(6, 4, heads=2, backend="pyg").double()
    other = GraphAttention(6, 4, heads=2, backend=backend).double()
    other.load_state_dict(reference.state_dict())
    x = torch.randn(15, 6, dtype=torch.float64)
    edge_index = random_graph(15, 40, seed=10)
    outputs, grads = [], []
    for layer in (reference, other):
        out = layer(x, edge_index)
        out.sin().sum().backward()
        outputs.append(out)
        grads.append([p.grad for p in layer.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0])
    for grad, reference_grad in zip(grads[1], grads[0]):
        torch.testing.assert_close(grad, reference_grad)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_unknown_backend_is_named_with_the_valid_ones():
    edge_index = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match=r"'cuda-magic'.*'pyg', 'dgl', 'math'"):
        edge_softmax(torch.randn(1), edge_index, 2, backend="cuda-magic")
    with pytest.raises(ValueError, match="'nope'"):
        aggregate(torch.randn(2, 3), torch.randn(1), edge_index, 2, backend="nope")
    with pytest.raises(ValueError, match="'nope'"):
        GraphAttention(2, 2, backend="nope")


LONG3 = torch.zeros(2, 3, dtype=torch.long)  # three edges 0 -> 0
TWO_EDGES = torch.tensor([[0, 1], [1, 2]])


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: edge_softmax(torch.randn(3), torch.zeros(3, 3).long(), 4), r"edge_index.*\[2, E\]"),
        (lambda: edge_softmax(torch.randn(3), LONG3[0], 4), r"edge_index.*\[2, E\]"),
        (lambda: edge_softmax(torch.randn(3), LONG3.float(), 4), "edge_index.*int64"),
        (lambda: edge_softmax(torch.randn(3), LONG3.int(), 4), "edge_index.*int64"),
        (lambda: edge_softmax(torch.randn(4), LONG3, 4), "scores has 4.*3 edges"),
        (lambda: edge_softmax(torch.randn(3, 2, 2), LONG3, 4), "scores"),
        (lambda: edge_softmax(torch.ones(3, dtype=torch.long), LONG3), "scores.*floating"),
        (
            lambda: edge_softmax(torch.randn(2), torch.tensor([[0, 1], [1, 4]]), 4),
            r"edge_index\[1\].*4.*num_nodes",
        ),
        (
            lambda: edge_softmax(torch.randn(2), torch.tensor([[0, -1], [1, 2]]), 4),
            r"edge_index\[0\].*negative",
        ),
        (
            lambda: aggregate(torch.randn(3, 2), torch.randn(2), torch.tensor([[0, 3], [1, 2]]), 4),
            "values has 3",
        ),
        (lambda: aggregate(torch.randn(3, 2), torch.randn(3), TWO_EDGES, 4), "weights has 3"),
        (lambda: aggregate(torch.randn(3, 2, 5), torch.randn(2), TWO_EDGES, 4), r"weights must be \[E, H\]"),
        (lambda: aggregate(torch.randn(3, 2, 5), torch.randn(2, 3), TWO_EDGES, 4), "3 heads"),
        (lambda: aggregate(torch.randn(3), torch.randn(2), TWO_EDGES, 4), "values must be"),
        (lambda: aggregate(torch.randn(3, 2), torch.randn(2), TWO_EDGES, -1), "num_nodes"),
        (lambda: to_sparse_adjacency(torch.rand(2, 2), TWO_EDGES, 3), "per head"),
        (lambda: to_sparse_adjacency(torch.rand(2), torch.tensor([[0, 3], [1, 2]]), 3), r"edge_index\[0\]"),
        (lambda: GraphAttention(4, 2)(torch.randn(5, 3), TWO_EDGES), r"x must be a \[N, 4\]"),
        (
            lambda: GraphAttention(4, 2)(torch.randn(5, 4), torch.tensor([[0], [7]])),
            r"edge_index\[1\].*5 rows",
        ),
    ],
)
def test_shape_errors_name_the_argument(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# --------------------------------------------------------------------------------------------------
# DGL import shim
# --------------------------------------------------------------------------------------------------


@needs_dgl
def test_import_dgl_returns_a_working_dgl():
    dgl = import_dgl()
    assert dgl is import_dgl()  # cached in sys.modules
    stubbed = getattr(sys.modules["dgl.graphbolt"], "__interplay_stub__", False)
    assert stubbed == (not compat_dgl._graphbolt_loadable(Path(dgl.__file__).parent))
    assert dgl.backend.backend_name == "pytorch"
    graph = dgl.graph((torch.tensor([0, 1]), torch.tensor([1, 2])), num_nodes=3)
    assert graph.num_edges() == 2


def test_import_dgl_explains_a_missing_install(monkeypatch):
    monkeypatch.setattr(compat_dgl, "_MODULE", "interplay_test_no_such_dgl")
    with pytest.raises(ImportError, match=r"dgl is not installed: pip install 'interplay-core\[dgl\]'"):
        import_dgl()
    assert not dgl_available()


def test_import_dgl_treats_a_blocked_import_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "dgl", None)
    with pytest.raises(ImportError, match="dgl is not installed"):
        import_dgl()
    with pytest.raises(ImportError, match="dgl is not installed"):
        edge_softmax(torch.randn(1), torch.tensor([[0], [1]]), 2, backend="dgl")


def test_missing_torch_geometric_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_geometric.utils", None)
    with pytest.raises(ImportError, match="backend 'pyg' needs torch_geometric"):
        edge_softmax(torch.randn(1), torch.tensor([[0], [1]]), 2)


def test_import_dgl_rejects_another_dgl_backend(monkeypatch):
    monkeypatch.setenv("DGLBACKEND", "tensorflow")
    with pytest.raises(ImportError, match="DGLBACKEND='tensorflow'"):
        import_dgl()


def test_graphbolt_stub_explains_itself():
    stub = compat_dgl._graphbolt_stub("dgl.graphbolt")
    with pytest.raises(AttributeError, match="graphbolt.*stub"):
        _ = stub.ItemSampler
    assert not hasattr(stub, "__file__")
