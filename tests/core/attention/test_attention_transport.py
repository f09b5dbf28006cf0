"""Optimal-transport co-attention: pure-torch Sinkhorn against POT, closed forms, batching, gradients."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from interplay.core.attention.transport import (
    OT_BACKENDS,
    OTCoAttention,
    ot_coattention,
    sinkhorn,
    sinkhorn_pot,
)


@pytest.fixture
def pot():
    return pytest.importorskip("ot")


def _random_problem(n=5, m=7, *, seed=0, dtype=torch.float64, batch=()):
    generator = torch.Generator().manual_seed(seed)
    cost = torch.rand(*batch, n, m, generator=generator, dtype=dtype)
    a = torch.rand(*batch, n, generator=generator, dtype=dtype) + 0.1
    b = torch.rand(*batch, m, generator=generator, dtype=dtype) + 0.1
    return a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), cost


# ------------------------------------------------------------------------------------------ balanced


@pytest.mark.parametrize("log_domain", [True, False])
def test_balanced_plan_has_the_requested_marginals(log_domain):
    a, b, cost = _random_problem()
    plan = sinkhorn(a, b, cost, reg=0.1, n_iters=1000, log_domain=log_domain)
    torch.testing.assert_close(plan.sum(-1), a, atol=1e-10, rtol=0)
    torch.testing.assert_close(plan.sum(-2), b, atol=1e-9, rtol=0)
    assert (plan >= 0).all()


@pytest.mark.parametrize("reg", [1.0, 0.1, 0.01])
def test_balanced_matches_pot_numpy_and_torch_backend(pot, reg):
    a, b, cost = _random_problem(seed=1)
    n_iters = 300
    ours = sinkhorn(a, b, cost, reg=reg, n_iters=n_iters, tol=None, log_domain=True)
    # POT's numpy path with the same iteration count (stopThr=0 never stops early), so the
    # comparison holds whether or not reg=0.01 has fully converged.
    reference = pot.sinkhorn(
        a.numpy(),
        b.numpy(),
        cost.numpy(),
        reg,
        method="sinkhorn",
        numItermax=n_iters,
        stopThr=0.0,
        warn=False,
    )
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-12, rtol=1e-8)
    through_pot_torch = sinkhorn_pot(a, b, cost, reg=reg, n_iters=n_iters, tol=None)
    assert isinstance(through_pot_torch, torch.Tensor)
    torch.testing.assert_close(ours, through_pot_torch, atol=1e-12, rtol=1e-8)
    if reg >= 0.1:  # the scaling domain is exact for moderate reg as well
        scaling = sinkhorn(a, b, cost, reg=reg, n_iters=n_iters, tol=None, log_domain=False)
        torch.testing.assert_close(scaling, ours, atol=1e-12, rtol=1e-8)


@pytest.mark.parametrize("reg", [1.0, 0.3])
def test_balanced_two_by_two_closed_form(reg):
    # For a 2x2 problem the marginals leave one free entry x = P11:
    #   P = [[x, a1 - x], [b1 - x, a2 - b1 + x]].
    # Entropic optimality P_ij = u_i K_ij v_j makes the cross ratio independent of u, v:
    #   P11 P22 / (P12 P21) = K11 K22 / (K12 K21) = exp(-(C11 + C22 - C12 - C21) / reg) =: r,
    # i.e. (1 - r) x^2 + (a2 - b1 + r (a1 + b1)) x - r a1 b1 = 0, with the root in the feasible range.
    a = torch.tensor([0.3, 0.7], dtype=torch.float64)
    b = torch.tensor([0.6, 0.4], dtype=torch.float64)
    cost = torch.tensor([[0.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
    r = math.exp(-(0.0 + 0.5 - 1.0 - 2.0) / reg)
    qa, qb, qc = 1 - r, 0.7 - 0.6 + r * (0.3 + 0.6), -r * 0.3 * 0.6
    roots = np.roots([qa, qb, qc])
    lower, upper = max(0.0, 0.6 - 0.7), min(0.3, 0.6)
    (x,) = [root.real for root in roots if lower <= root.real <= upper]
    expected = torch.tensor([[x, 0.3 - x], [0.6 - x, 0.1 + x]], dtype=torch.float64)
    for log_domain in (True, False):
        plan = sinkhorn(a, b, cost, reg=reg, n_iters=500, log_domain=log_domain)
        torch.testing.assert_close(plan, expected, atol=1e-10, rtol=0)


def test_balanced_symmetric_two_by_two_is_the_normalised_kernel():
    # a = b = uniform and a symmetric cost: u and v are constant, so P = K / (2 (1 + exp(-1/reg))).
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    plan = sinkhorn(None, None, cost, reg=1.0)
    diagonal = 0.5 / (1 + math.exp(-1.0))
    expected = torch.tensor([[diagonal, 0.5 - diagonal], [0.5 - diagonal, diagonal]], dtype=torch.float64)
    torch.testing.assert_close(plan, expected, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------- unbalanced


def test_unbalanced_matches_pot_in_motcat_setting(pot):
    # MOTCat: uniform marginals, cost = squared distance / max, reg (eps) = 0.05, reg_m (tau) = 0.5.
    generator = torch.Generator().manual_seed(2)
    patches = torch.randn(20, 8, generator=generator, dtype=torch.float64)
    genes = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    cost = torch.cdist(patches, genes) ** 2
    cost = cost / cost.max()
    ours = sinkhorn(None, None, cost, reg=0.05, reg_m=0.5, n_iters=200, tol=None)
    with pytest.warns(UserWarning, match="reg_type = entropy"):
        reference = pot.unbalanced.sinkhorn_knopp_unbalanced(
            pot.unif(20),
            pot.unif(6),
            cost.numpy(),
            0.05,
            0.5,
            reg_type="entropy",
            numItermax=200,
            stopThr=0.0,
        )
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-13, rtol=1e-9)
    torch.testing.assert_close(
        sinkhorn_pot(None, None, cost, reg=0.05, reg_m=0.5, n_iters=200, tol=None), ours
    )
    scaling = sinkhorn(None, None, cost, reg=0.05, reg_m=0.5, n_iters=200, tol=None, log_domain=False)
    torch.testing.assert_close(scaling, ours, atol=1e-13, rtol=1e-9)
    # POT >= 0.9.5's default reference measure a b^T is available as reg_type="kl".
    kl = sinkhorn(None, None, cost, reg=0.05, reg_m=0.5, n_iters=200, tol=None, reg_type="kl")
    reference_kl = pot.unbalanced.sinkhorn_knopp_unbalanced(
        pot.unif(20), pot.unif(6), cost.numpy(), 0.05, 0.5, reg_type="kl", numItermax=200, stopThr=0.0
    )
    np.testing.assert_allclose(kl.numpy(), reference_kl, atol=1e-13, rtol=1e-9)


def test_unbalanced_two_by_two_closed_forms():
    # Symmetric problem: u = v = s with s = (c / s) ** fi, c = 0.5 / (K11 + K12), so s = c ** (fi / (1 + fi))
    # and P11 = s^2 K11. With reg = reg_m = 1, fi = 1/2. For reg_type="kl" K carries the factor a_i b_j = 1/4
    # (this is POT's docstring example, P11 = 0.3220536).
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    fi = 0.5
    for reg_type, scale, expected_p11 in (("entropy", 1.0, None), ("kl", 0.25, 0.3220536)):
        k11, k12 = scale, scale * math.exp(-1.0)
        s = (0.5 / (k11 + k12)) ** (fi / (1 + fi))
        expected = torch.tensor([[s * s * k11, s * s * k12], [s * s * k12, s * s * k11]], dtype=torch.float64)
        plan = sinkhorn(None, None, cost, reg=1.0, reg_m=1.0, n_iters=200, reg_type=reg_type)
        torch.testing.assert_close(plan, expected, atol=1e-12, rtol=0)
        if expected_p11 is not None:
            assert round(plan[0, 0].item(), 7) == expected_p11


def test_unbalanced_approaches_balanced_for_large_reg_m():
    a, b, cost = _random_problem(seed=3)
    balanced = sinkhorn(a, b, cost, reg=0.1, n_iters=2000)
    nearly = sinkhorn(a, b, cost, reg=0.1, reg_m=1e4, n_iters=2000)
    loose = sinkhorn(a, b, cost, reg=0.1, reg_m=0.5, n_iters=2000)
    assert (nearly - balanced).abs().max() < 1e-4
    assert (loose - balanced).abs().max() > 10 * (nearly - balanced).abs().max()
    torch.testing.assert_close(nearly.sum(-1), a, atol=1e-4, rtol=0)
    # reg_m = inf is POT's spelling of balanced OT inside the unbalanced solver.
    infinite = sinkhorn(a, b, cost, reg=0.1, reg_m=float("inf"), n_iters=2000)
    torch.testing.assert_close(infinite, balanced, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------ batching, autograd


@pytest.mark.parametrize("reg_m", [None, 0.5])
@pytest.mark.parametrize("log_domain", [True, False])
def test_batch_equals_per_item_calls_including_early_stop(reg_m, log_domain):
    a, b, cost = _random_problem(4, 6, seed=4, batch=(3,))
    # Different cost scales make the entries converge after different numbers of iterations, so the
    # batch must freeze converged entries to reproduce the per-item early stop.
    cost = cost * torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)[:, None, None]
    for tol in (None, 1e-6):
        batched = sinkhorn(a, b, cost, reg=0.2, reg_m=reg_m, n_iters=300, tol=tol, log_domain=log_domain)
        assert batched.shape == (3, 4, 6)
        for index in range(3):
            single = sinkhorn(
                a[index],
                b[index],
                cost[index],
                reg=0.2,
                reg_m=reg_m,
                n_iters=300,
                tol=tol,
                log_domain=log_domain,
            )
            torch.testing.assert_close(batched[index], single, atol=1e-14, rtol=1e-12)


def test_marginals_broadcast_over_batch_dims():
    a, b, cost = _random_problem(3, 4, seed=5, batch=(2, 3))
    shared = sinkhorn(a[0, 0], None, cost, reg=0.5)
    assert shared.shape == (2, 3, 3, 4)
    torch.testing.assert_close(shared.sum(-1), a[0, 0].expand(2, 3, 3), atol=1e-9, rtol=0)
    torch.testing.assert_close(
        shared.sum(-2), torch.full((2, 3, 4), 0.25, dtype=torch.float64), atol=1e-9, rtol=0
    )


@pytest.mark.parametrize("reg_m", [None, 0.5])
@pytest.mark.parametrize("log_domain", [True, False])
def test_gradcheck_through_the_iterations(reg_m, log_domain):
    a, b, cost = _random_problem(3, 4, seed=6)
    cost.requires_grad_(True)
    if reg_m is not None:  # balanced marginals must keep equal mass under gradcheck's perturbations
        a.requires_grad_(True)
        b.requires_grad_(True)

    def solve(a_, b_, cost_):
        return sinkhorn(a_, b_, cost_, reg=0.3, reg_m=reg_m, n_iters=6, tol=None, log_domain=log_domain)

    assert torch.autograd.gradcheck(solve, (a, b, cost))


def test_small_reg_log_domain_is_finite_forward_and_backward():
    generator = torch.Generator().manual_seed(7)
    cost = torch.rand(2, 30, 6, generator=generator, requires_grad=True)  # float32
    for reg_m in (None, 0.5):
        plan = sinkhorn(None, None, cost, reg=0.005, reg_m=reg_m, n_iters=100)
        (plan * torch.randn(plan.shape, generator=generator)).sum().backward()
        assert torch.isfinite(plan).all()
        assert torch.isfinite(cost.grad).all()
        cost.grad = None


def test_scaling_domain_warns_when_the_kernel_underflows():
    cost = torch.rand(4, 5) * 10
    with pytest.warns(RuntimeWarning, match="log_domain=True"):
        sinkhorn(None, None, cost, reg=0.01, n_iters=5, log_domain=False)


def test_pure_torch_path_under_no_grad_and_float32():
    a, b, cost = _random_problem(seed=8, dtype=torch.float32)
    with torch.no_grad():
        plan = sinkhorn(a, b, cost.requires_grad_(True), reg=0.05)
    assert plan.dtype == torch.float32
    assert not plan.requires_grad
    torch.testing.assert_close(plan.sum(-1), a, atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(-2), b, atol=1e-5, rtol=0)
    reference = sinkhorn(a.double(), b.double(), cost.detach().double(), reg=0.05)
    torch.testing.assert_close(plan.double(), reference, atol=1e-6, rtol=1e-4)


# -------------------------------------------------------------------------------------- co-attention


def test_ot_coattention_is_plan_transpose_times_query():
    generator = torch.Generator().manual_seed(9)
    patches = torch.randn(40, 16, generator=generator, requires_grad=True)
    genes = torch.randn(6, 16, generator=generator)
    coattended, plan = ot_coattention(patches, genes)
    assert coattended.shape == (6, 16)
    assert plan.shape == (40, 6)
    torch.testing.assert_close(coattended, plan.T @ patches)
    # MOTCat detaches the cost: the plan is a constant and gradients reach P through the aggregation.
    assert not plan.requires_grad
    coattended.sum().backward()
    torch.testing.assert_close(patches.grad, plan.sum(-1, keepdim=True).expand(40, 16))
    # Same plan as solving the normalised squared-distance cost directly.
    cost = torch.cdist(patches.detach(), genes) ** 2
    torch.testing.assert_close(plan, sinkhorn(None, None, cost / cost.max(), reg=0.05, reg_m=0.5))
    _, without_plan = ot_coattention(patches, genes, return_plan=False)
    assert without_plan is None


def test_ot_coattention_matches_motcat_reference_pipeline(pot):
    # MOTCat's OT_Attn_assem: shift features by their row minimum, cost = cdist^2 / max in float64,
    # POT's unbalanced Sinkhorn (entropy kernel) with eps=0.05, tau=0.5, then plan^T @ (unshifted) P.
    generator = torch.Generator().manual_seed(10)
    patches = torch.randn(25, 12, generator=generator, dtype=torch.float64)
    genes = torch.randn(6, 12, generator=generator, dtype=torch.float64)
    shifted_p = patches - patches.min(-1, keepdim=True).values
    shifted_g = genes - genes.min(-1, keepdim=True).values
    cost = (torch.cdist(shifted_p, shifted_g) ** 2).numpy()
    with pytest.warns(UserWarning):
        flow = pot.unbalanced.sinkhorn_knopp_unbalanced(
            pot.unif(25), pot.unif(6), cost / cost.max(), 0.05, 0.5, reg_type="entropy"
        )
    expected = torch.from_numpy(flow).T @ patches
    coattended, plan = ot_coattention(patches, genes, shift_by_min=True)
    np.testing.assert_allclose(plan.numpy(), flow, atol=1e-8, rtol=1e-5)
    torch.testing.assert_close(coattended, expected, atol=1e-7, rtol=1e-5)


def test_ot_coattention_batched_and_pot_backend_agree(pot):
    generator = torch.Generator().manual_seed(11)
    patches = torch.randn(3, 20, 8, generator=generator, dtype=torch.float64)
    genes = torch.randn(3, 5, 8, generator=generator, dtype=torch.float64)
    coattended, plan = ot_coattention(patches, genes, n_iters=200)
    assert coattended.shape == (3, 5, 8) and plan.shape == (3, 20, 5)
    for index in range(3):
        single, single_plan = ot_coattention(patches[index], genes[index], n_iters=200)
        torch.testing.assert_close(coattended[index], single)
        torch.testing.assert_close(plan[index], single_plan)
    for reg_m in (0.5, None):
        by_torch = ot_coattention(patches, genes, reg=0.1, reg_m=reg_m, n_iters=200)
        by_pot = ot_coattention(patches, genes, reg=0.1, reg_m=reg_m, n_iters=200, backend="pot")
        torch.testing.assert_close(by_pot[0], by_torch[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(by_pot[1], by_torch[1], atol=1e-7, rtol=1e-5)


def test_ot_coattention_broadcasts_key_tokens_and_runs_under_no_grad():
    generator = torch.Generator().manual_seed(12)
    patches = torch.randn(2, 4, 10, 8, generator=generator)
    genes = torch.randn(6, 8, generator=generator)
    with torch.no_grad():
        coattended, plan = ot_coattention(patches, genes)
    assert coattended.shape == (2, 4, 6, 8) and plan.shape == (2, 4, 10, 6)
    assert coattended.dtype == torch.float32 and torch.isfinite(coattended).all()


def test_ot_coattention_without_detach_propagates_through_the_plan():
    generator = torch.Generator().manual_seed(13)
    patches = torch.randn(12, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    genes = torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    coattended, plan = ot_coattention(patches, genes, detach_cost=False, n_iters=30)
    assert plan.requires_grad
    coattended.square().sum().backward()
    assert genes.grad is not None and torch.isfinite(genes.grad).all() and genes.grad.abs().sum() > 0
    assert torch.isfinite(patches.grad).all()


def test_ot_coattention_module():
    module = OTCoAttention(reg=0.1, reg_m=0.5, n_iters=50)
    assert "reg=0.1" in repr(module) and list(module.parameters()) == []
    generator = torch.Generator().manual_seed(14)
    patches, genes = torch.randn(9, 4, generator=generator), torch.randn(3, 4, generator=generator)
    coattended, plan = module(patches, genes)
    expected = ot_coattention(patches, genes, reg=0.1, reg_m=0.5, n_iters=50)
    torch.testing.assert_close(coattended, expected[0])
    torch.testing.assert_close(plan, expected[1])


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cost": torch.rand(5)}, "cost must be at least 2-D"),
        ({"cost": torch.tensor([[0.0, math.nan]])}, "cost contains NaN"),
        ({"cost": torch.tensor([[0.0, math.inf]])}, "cost contains inf"),
        ({"a": torch.full((4,), 0.25)}, "a must have length N=3"),
        ({"b": torch.full((3,), 1 / 3)}, "b must have length M=4"),
        ({"a": torch.tensor([0.5, 0.7, -0.2])}, "a must be non-negative"),
        ({"b": torch.tensor([0.5, math.nan, 0.25, 0.25])}, "b contains NaN"),
        ({"a": torch.zeros(3)}, "a must have positive total mass"),
        ({"a": torch.full((2, 3), 1 / 3)}, "does not broadcast"),
        ({"a": torch.tensor([0.2, 0.2, 0.2])}, "equal total mass"),
        ({"reg": 0.0}, "reg must be"),
        ({"reg": -1.0}, "reg must be"),
        ({"reg_m": 0.0}, "reg_m must be"),
        ({"reg_m": -0.5}, "reg_m must be"),
        ({"n_iters": 0}, "n_iters must be"),
        ({"tol": -1.0}, "tol must be"),
        ({"reg_type": "l2"}, "reg_type must be one of"),
    ],
)
def test_sinkhorn_errors_name_the_argument(kwargs, message):
    arguments = {"a": None, "b": None, "cost": torch.rand(3, 4), "reg": 0.1}
    arguments.update(kwargs)
    a, b, cost = arguments.pop("a"), arguments.pop("b"), arguments.pop("cost")
    with pytest.raises(ValueError, match=message):
        sinkhorn(a, b, cost, **arguments)


def test_ot_coattention_errors():
    patches, genes = torch.rand(5, 4), torch.rand(3, 4)
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'pot'\)"):
        ot_coattention(patches, genes, backend="cuda")
    with pytest.raises(ValueError, match="share the feature dim"):
        ot_coattention(patches, torch.rand(3, 5))
    with pytest.raises(ValueError, match="query_tokens contains NaN"):
        ot_coattention(torch.full((5, 4), math.nan), genes)
    with pytest.raises(ValueError, match="key_tokens contains inf"):
        ot_coattention(patches, torch.full((3, 4), math.inf))
    with pytest.raises(ValueError, match="key_tokens must be at least 2-D"):
        ot_coattention(patches, torch.rand(4))
    with pytest.raises(ValueError, match="do not broadcast"):
        ot_coattention(torch.rand(2, 5, 4), torch.rand(3, 3, 4))
    with pytest.raises(ValueError, match="reg must be"):
        ot_coattention(patches, genes, reg=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        OTCoAttention(backend="scipy")
    with pytest.raises(ValueError, match="reg_m must be"):
        OTCoAttention(reg_m=0.0)
    assert OT_BACKENDS == ("torch", "pot")


def test_sinkhorn_pot_without_pot_raises_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # makes `import ot` raise ImportError
    with pytest.raises(ImportError, match="pip install 'pot"):
        sinkhorn_pot(None, None, torch.rand(3, 4), reg=0.1)
    with pytest.raises(ImportError, match="pip install 'pot"):
        ot_coattention(torch.rand(5, 4), torch.rand(3, 4), backend="pot")
