"""Optimal-transport co-attention: batched entropic (un)balanced Sinkhorn and MOTCat's OT co-attention.

Papers and equations
--------------------
* Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
  Entropic OT ``min_{P 1 = a, P^T 1 = b} <P, C> - reg * H(P)`` has the solution
  ``P = diag(u) K diag(v)`` with Gibbs kernel ``K = exp(-C / reg)``; Sinkhorn-Knopp alternates
  ``v = b / (K^T u)`` and ``u = a / (K v)`` (Cuturi's Algorithm 1; POT's ``sinkhorn_knopp``).
* Chizat, Peyre, Schmitzer & Vialard, "Scaling Algorithms for Unbalanced Optimal Transport
  Problems", Mathematics of Computation 2018. Relaxing both marginal constraints to
  ``reg_m * KL(P 1 | a) + reg_m * KL(P^T 1 | b)`` turns the scaling steps into the proximal updates
  ``u = (a / (K v)) ** fi`` and ``v = (b / (K^T u)) ** fi`` with ``fi = reg_m / (reg_m + reg)``
  (their Sec. 4 / Algorithm 1 for the KL divergence; POT's ``sinkhorn_knopp_unbalanced``).
* Xu & Chen, "Multimodal Optimal Transport-based Co-Attention Transformer with Global Structure
  Consistency for Survival Prediction" (MOTCat), ICCV 2023. Patch embeddings ``P [N, D]`` and genomic
  group embeddings ``G [M, D]`` are matched by unbalanced OT with the cost
  ``C = ||P_i - G_j||^2 / max(C)`` (detached), uniform marginals, ``reg = eps`` and ``reg_m = tau``
  (their Eq. 2-4); the co-attended path tokens are ``H = P_plan^T P [M, D]`` (Eq. 5).

Conventions
-----------
Costs are ``[..., N, M]`` and marginals ``[..., N]`` / ``[..., M]``; leading dims are batch dims and
each batch entry is an independent problem. The plan is always ``P_ij = u_i K_ij v_j``. The log-domain
solver carries ``log u`` and ``log v`` and replaces every ``K @ v`` by a log-sum-exp, so small ``reg``
(``0.01`` with costs in ``[0, 1]``) neither underflows nor produces NaN gradients. Gradients flow by
autograd through the unrolled iterations. When no graph is needed (``torch.no_grad``, or inputs that
do not require grad, as MOTCat's detached cost) the same iterates are computed by log-stabilised
scaling with absorption (Schmitzer 2019): one mat-vec per half step instead of an ``N x M``
log-sum-exp, equal to the log-sum-exp iterates up to round-off (~1e-14 relative in float64).

``reg_type="entropy"`` (the default) is the kernel ``K = exp(-C / reg)`` that MOTCat got from POT
before 0.9.5; POT >= 0.9.5 defaults its unbalanced solver to ``reg_type="kl"``, i.e. the reference
measure ``a b^T`` folded into ``K``. Both are available; for balanced OT the two give the same plan.

POT is an optional dependency of core (it belongs to ``interplay-bio``); :func:`sinkhorn_pot` imports
it lazily and is the reference the pure-torch solver is tested against.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["OT_BACKENDS", "OTCoAttention", "ot_coattention", "sinkhorn", "sinkhorn_pot"]

OT_BACKENDS: tuple[str, ...] = ("torch", "pot")
_REG_TYPES: tuple[str, ...] = ("entropy", "kl")
# Convergence is tested every this many iterations (as POT's balanced solver does): each test needs
# a host sync, so testing every iteration would stall a GPU pipeline.
_CHECK_EVERY = 10
# Relative tolerance on |sum(a) - sum(b)| for balanced OT (loose enough for float32 round-off).
_MASS_RTOL = 1e-4


# --------------------------------------------------------------------------------------------------
# validation


def _check_finite_tensor(x: Tensor, name: str) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN")
    if torch.isinf(x).any():
        raise ValueError(f"{name} contains inf")


def _check_reg(reg: float, reg_m: float | None, n_iters: int, tol: float | None, reg_type: str) -> None:
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not math.isfinite(reg) or reg <= 0:
        raise ValueError(f"reg must be a finite number > 0; got {reg!r}")
    if reg_m is not None and (
        isinstance(reg_m, bool) or not isinstance(reg_m, numbers.Real) or math.isnan(reg_m) or reg_m <= 0
    ):
        raise ValueError(
            f"reg_m must be None (balanced OT) or a number > 0 (float('inf') allowed); got {reg_m!r}"
        )
    if isinstance(n_iters, bool) or not isinstance(n_iters, numbers.Integral) or n_iters < 1:
        raise ValueError(f"n_iters must be an int >= 1; got {n_iters!r}")
    if tol is not None and (not isinstance(tol, numbers.Real) or math.isnan(tol) or tol < 0):
        raise ValueError(f"tol must be None or a number >= 0; got {tol!r}")
    if reg_type not in _REG_TYPES:
        raise ValueError(f"reg_type must be one of {_REG_TYPES}; got {reg_type!r}")


def _check_cost(cost: Tensor) -> Tensor:
    if not isinstance(cost, Tensor):
        raise ValueError(f"cost must be a torch.Tensor; got {type(cost).__name__}")
    if cost.ndim < 2:
        raise ValueError(f"cost must be at least 2-D [..., N, M]; got shape {tuple(cost.shape)}")
    if cost.shape[-2] == 0 or cost.shape[-1] == 0:
        raise ValueError(f"cost must have N >= 1 and M >= 1; got shape {tuple(cost.shape)}")
    if not cost.is_floating_point():
        cost = cost.to(torch.get_default_dtype())
    _check_finite_tensor(cost, "cost")
    return cost


def _marginal(x: Tensor | Sequence[float] | None, name: str, cost: Tensor, dim: int) -> Tensor:
    """Validated marginal broadcast to ``cost.shape[:-2] + (length,)`` in ``cost``'s dtype/device."""
    length = cost.shape[dim]
    full_shape = (*cost.shape[:-2], length)
    if x is None:
        return torch.full(full_shape, 1.0 / length, dtype=cost.dtype, device=cost.device)
    x = torch.as_tensor(x, device=cost.device).to(cost.dtype)
    axis = "N" if dim == -2 else "M"
    if x.ndim == 0 or x.shape[-1] != length:
        raise ValueError(
            f"{name} must have length {axis}={length} in its last dim to match cost of shape "
            f"{tuple(cost.shape)}; got shape {tuple(x.shape)}"
        )
    _check_finite_tensor(x, name)
    if (x < 0).any():
        raise ValueError(f"{name} must be non-negative; got min {x.min().item():.3g}")
    if (x.sum(-1) <= 0).any():
        raise ValueError(f"{name} must have positive total mass in every batch entry")
    try:
        return torch.broadcast_to(x, full_shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} does not broadcast to the cost's batch shape "
            f"{tuple(cost.shape[:-2])} + ({length},)"
        ) from None


def _check_balanced_mass(a: Tensor, b: Tensor) -> None:
    mass_a, mass_b = a.sum(-1), b.sum(-1)
    scale = torch.maximum(mass_a.abs(), mass_b.abs())
    if ((mass_a - mass_b).abs() > _MASS_RTOL * scale).any():
        raise ValueError(
            "a and b must have equal total mass for balanced OT (reg_m=None); got sum(a)="
            f"{mass_a.flatten()[0].item():.6g}, sum(b)={mass_b.flatten()[0].item():.6g} (first entry). "
            "Normalise them or pass reg_m for unbalanced OT."
        )


def _prepare(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    reg: float,
    reg_m: float | None,
    n_iters: int,
    tol: float | None,
    reg_type: str,
) -> tuple[Tensor, Tensor, Tensor]:
    _check_reg(reg, reg_m, n_iters, tol, reg_type)
    cost = _check_cost(cost)
    a_full = _marginal(a, "a", cost, -2)
    b_full = _marginal(b, "b", cost, -1)
    if reg_m is None:
        _check_balanced_mass(a_full, b_full)
    return a_full, b_full, cost


# --------------------------------------------------------------------------------------------------
# pure-torch solver


def _freeze(active: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """Keep converged batch entries at their value (so a batch equals its entries solved alone)."""
    if active is None:
        return new
    return torch.where(active.unsqueeze(-1), new, old)


def sinkhorn(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    *,
    reg: float,
    reg_m: float | None = None,
    n_iters: int = 100,
    tol: float | None = 1e-9,
    log_domain: bool = True,
    reg_type: str = "entropy",
) -> Tensor:
    """Batched entropic optimal transport plan by (unbalanced) Sinkhorn-Knopp scaling.

    Args:
        a: source marginal ``[..., N]`` (broadcast over the cost's batch dims); ``None`` is uniform ``1/N``.
        b: target marginal ``[..., M]``; ``None`` is uniform ``1/M``.
        cost: cost matrix ``[..., N, M]``.
        reg: entropic regularisation ``> 0`` (Cuturi's ``1/lambda``; MOTCat's ``eps``).
        reg_m: marginal relaxation ``> 0`` for unbalanced OT (MOTCat's ``tau``); ``None`` is balanced OT
            (``a`` and ``b`` must then have equal mass). ``float('inf')`` runs the unbalanced loop with
            ``fi = 1``, as POT does.
        n_iters: maximum number of scaling iterations (one iteration updates both ``u`` and ``v``).
        tol: early-stop threshold checked every 10 iterations, per batch entry: balanced, the largest
            column-marginal violation ``max_j |(P^T 1)_j - b_j|`` (rows are exact after each iteration);
            unbalanced, the largest change of either marginal of ``P`` since the previous check. A
            converged entry is frozen while the rest of the batch iterates, so a batch gives the same
            plans as its entries solved one at a time. ``None`` runs exactly ``n_iters`` iterations with
            no host syncs.
        log_domain: iterate on ``log u, log v`` with log-sum-exp (stable for small ``reg``; without
            autograd, by the equivalent absorbed-kernel scaling, see the module docstring); ``False``
            multiplies by ``K = exp(-C/reg)`` directly (faster, underflows when ``C/reg`` exceeds ~700 in
            float64 / ~87 in float32).
        reg_type: ``"entropy"`` (``K = exp(-C/reg)``, MOTCat / POT < 0.9.5) or ``"kl"`` (``K`` times the
            reference measure ``a b^T``, POT >= 0.9.5's unbalanced default). Irrelevant for balanced OT.

    Returns:
        The plan ``[..., N, M]`` in the cost's dtype, differentiable w.r.t. ``cost``, ``a`` and ``b``.

    The update order follows POT so that equal iteration counts give equal plans: balanced updates
    ``v`` then ``u`` (``sinkhorn_knopp``), unbalanced updates ``u`` then ``v`` from ``u = v = 1``
    (``sinkhorn_knopp_unbalanced``).
    """
    a, b, cost = _prepare(a, b, cost, reg, reg_m, n_iters, tol, reg_type)
    balanced = reg_m is None
    fi = 1.0 if balanced or math.isinf(reg_m) else reg_m / (reg_m + reg)
    batch_shape = cost.shape[:-2]
    n, m = cost.shape[-2:]
    unbalanced_kl = reg_type == "kl" and not balanced
    if log_domain:
        args = (a, b, cost, reg, fi, balanced, unbalanced_kl, n_iters, tol, batch_shape, n, m)
        needs_graph = torch.is_grad_enabled() and (cost.requires_grad or a.requires_grad or b.requires_grad)
        # Same iterates, other round-off: without a graph to record, the absorbed-kernel form is
        # cheaper (two mat-vecs per iteration instead of two N x M log-sum-exps; ~20-50x at N=1e5, M=6).
        return _sinkhorn_log(*args) if needs_graph else _sinkhorn_absorbed(*args)
    plan = _sinkhorn_scaling(a, b, cost, reg, fi, balanced, unbalanced_kl, n_iters, tol, batch_shape, n, m)
    if not torch.isfinite(plan).all():
        warnings.warn(
            "sinkhorn(log_domain=False) produced non-finite values (the kernel exp(-cost/reg) underflowed); "
            "use log_domain=True or a larger reg",
            RuntimeWarning,
            stacklevel=2,
        )
    return plan


def _sinkhorn_log(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    reg: float,
    fi: float,
    balanced: bool,
    unbalanced_kl: bool,
    n_iters: int,
    tol: float | None,
    batch_shape: torch.Size,
    n: int,
    m: int,
) -> Tensor:
    log_a, log_b = torch.log(a), torch.log(b)
    log_k = -cost / reg
    if unbalanced_kl:
        log_k = log_k + log_a.unsqueeze(-1) + log_b.unsqueeze(-2)
    log_u = cost.new_zeros((*batch_shape, n))
    log_v = cost.new_zeros((*batch_shape, m))

    def marginals(lu: Tensor, lv: Tensor) -> tuple[Tensor, Tensor]:
        log_plan = lu.unsqueeze(-1) + log_k + lv.unsqueeze(-2)
        return torch.logsumexp(log_plan, -1).exp(), torch.logsumexp(log_plan, -2).exp()

    active: Tensor | None = None  # None while every entry is still iterating
    previous: tuple[Tensor, Tensor] | None = None
    for it in range(n_iters):
        if balanced:
            new_v = log_b - torch.logsumexp(log_k + log_u.unsqueeze(-1), dim=-2)
            log_v = _freeze(active, new_v, log_v)
            new_u = log_a - torch.logsumexp(log_k + log_v.unsqueeze(-2), dim=-1)
            log_u = _freeze(active, new_u, log_u)
        else:
            new_u = fi * (log_a - torch.logsumexp(log_k + log_v.unsqueeze(-2), dim=-1))
            log_u = _freeze(active, new_u, log_u)
            new_v = fi * (log_b - torch.logsumexp(log_k + log_u.unsqueeze(-1), dim=-2))
            log_v = _freeze(active, new_v, log_v)
        if tol is not None and (it + 1) % _CHECK_EVERY == 0 and it + 1 < n_iters:
            with torch.no_grad():
                rows, cols = marginals(log_u, log_v)
                active, previous, done = _update_active(active, rows, cols, b, previous, balanced, tol)
            if done:
                break
    return torch.exp(log_u.unsqueeze(-1) + log_k + log_v.unsqueeze(-2))


# An absorbed scaling vector is folded back into the kernel once it leaves [1/_ABSORB, _ABSORB]
# (Schmitzer's threshold tau; POT's sinkhorn_stabilized uses 1e3), so the kernel never under- or
# overflows however small reg is.
_ABSORB = 1e3


def _sinkhorn_absorbed(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    reg: float,
    fi: float,
    balanced: bool,
    unbalanced_kl: bool,
    n_iters: int,
    tol: float | None,
    batch_shape: torch.Size,
    n: int,
    m: int,
) -> Tensor:
    """The iterates of :func:`_sinkhorn_log`, computed by log-stabilised scaling (used without autograd).

    Schmitzer, "Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport Problems",
    SIAM J. Sci. Comput. 2019, Sec. 3.2 (absorption): the potentials are split as
    ``log u = f + log u_rel`` and ``log v = g + log v_rel``; the kernel ``K_abs = exp(log_k + f + g)``
    carries ``f, g``, and each half step is one mat-vec with it instead of an ``N x M`` log-sum-exp.
    The unbalanced proximal step leaves a factor ``exp((fi - 1) f)`` per absorbed row (column)::

        u = (a / (K v)) ** fi  =>  u_rel = exp(fi * log a + (fi - 1) f - fi * log(K_abs v_rel))

    Iteration 0 runs in the log domain and is absorbed whole, so the kernel starts as the plan itself
    (finite for any ``reg``); afterwards a batch entry absorbs again when one of its scaling entries
    leaves ``[1/_ABSORB, _ABSORB]``. Converged (frozen) entries never absorb, so a batch computes
    what its entries compute alone. Only round-off differs from :func:`_sinkhorn_log` (in float32 it
    is the more accurate of the two: the log domain loses digits once ``|log u|`` is large).

    The kernel is stored transposed, ``[..., M, N]``: with few columns (MOTCat's six genomic groups)
    both mat-vecs then stream over contiguous rows of length ``N``.
    """
    log_a, log_b = torch.log(a), torch.log(b)
    log_k = -cost / reg
    if unbalanced_kl:
        log_k = log_k + log_a.unsqueeze(-1) + log_b.unsqueeze(-2)
    # iteration 0 in the log domain from u = v = 1 (POT's start), exactly as _sinkhorn_log
    if balanced:
        g = log_b - torch.logsumexp(log_k, dim=-2)
        f = log_a - torch.logsumexp(log_k + g.unsqueeze(-2), dim=-1)
    else:
        f = fi * (log_a - torch.logsumexp(log_k, dim=-1))
        g = fi * (log_b - torch.logsumexp(log_k + f.unsqueeze(-1), dim=-2))
    fallback = (a, b, cost, reg, fi, balanced, unbalanced_kl, n_iters, tol, batch_shape, n, m)
    if not (torch.isfinite(f).all() and torch.isfinite(g).all()):
        # zero marginals (log 0 = -inf) give empty kernel rows whose scaling update is 0 / 0
        return _sinkhorn_log(*fallback)
    log_k_t = log_k.transpose(-2, -1).contiguous()  # [..., M, N]
    kernel_t = torch.exp(log_k_t + f.unsqueeze(-2) + g.unsqueeze(-1))
    u = cost.new_ones((*batch_shape, n))
    v = cost.new_ones((*batch_shape, m))
    unbatched = kernel_t.ndim == 2

    def k_v(vec: Tensor) -> Tensor:  # (K_abs v)_i, length N
        if unbatched:
            return kernel_t.t().mv(vec)
        return (vec.unsqueeze(-2) @ kernel_t).squeeze(-2)

    def kt_u(vec: Tensor) -> Tensor:  # (K_abs^T u)_j, length M
        if unbatched:
            return kernel_t.mv(vec)
        return (kernel_t @ vec.unsqueeze(-1)).squeeze(-1)

    offset_u = offset_v = None  # fi * log a + (fi - 1) f (and for v); unused when fi == 1

    def refresh_offsets() -> None:
        nonlocal offset_u, offset_v
        if fi != 1.0:
            offset_u = fi * log_a + (fi - 1.0) * f
            offset_v = fi * log_b + (fi - 1.0) * g

    def update(marginal: Tensor, kernel_times: Tensor, offset: Tensor | None) -> Tensor:
        if offset is None:  # fi == 1: the balanced scaling step
            return marginal / kernel_times
        return torch.log(kernel_times).mul_(-fi).add_(offset).exp_()

    def escaped(vec: Tensor) -> Tensor:
        return (vec.amin(-1) < 1.0 / _ABSORB) | (vec.amax(-1) > _ABSORB)

    refresh_offsets()
    active: Tensor | None = None
    previous: tuple[Tensor, Tensor] | None = None
    for it in range(1, n_iters):
        if balanced:
            v = _freeze(active, update(b, kt_u(u), offset_v), v)
            u = _freeze(active, update(a, k_v(v), offset_u), u)
        else:
            u = _freeze(active, update(a, k_v(v), offset_u), u)
            v = _freeze(active, update(b, kt_u(u), offset_v), v)
        absorb = escaped(u) | escaped(v)
        if active is not None:
            absorb = absorb & active
        if bool(absorb.any()):
            keep = absorb.unsqueeze(-1)
            f = torch.where(keep, f + torch.log(u), f)
            g = torch.where(keep, g + torch.log(v), g)
            u = torch.where(keep, torch.ones_like(u), u)
            v = torch.where(keep, torch.ones_like(v), v)
            # entries that did not absorb get bit-identical kernels back (same f, g, same exp)
            kernel_t = torch.exp(log_k_t + f.unsqueeze(-2) + g.unsqueeze(-1))
            refresh_offsets()
        if tol is not None and (it + 1) % _CHECK_EVERY == 0 and it + 1 < n_iters:
            rows, cols = u * k_v(v), v * kt_u(u)
            active, previous, done = _update_active(active, rows, cols, b, previous, balanced, tol)
            if done:
                break
    plan = (u.unsqueeze(-2) * kernel_t * v.unsqueeze(-1)).transpose(-2, -1).contiguous()
    if not torch.isfinite(plan).all():
        # a kernel row or column underflowed to zero (float32, tiny reg, far-apart supports): the
        # log-sum-exp iteration is exact there
        return _sinkhorn_log(*fallback)
    return plan


def _sinkhorn_scaling(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    reg: float,
    fi: float,
    balanced: bool,
    unbalanced_kl: bool,
    n_iters: int,
    tol: float | None,
    batch_shape: torch.Size,
    n: int,
    m: int,
) -> Tensor:
    kernel = torch.exp(-cost / reg)
    if unbalanced_kl:
        kernel = kernel * a.unsqueeze(-1) * b.unsqueeze(-2)
    u = cost.new_ones((*batch_shape, n))
    v = cost.new_ones((*batch_shape, m))

    def k_v(vec: Tensor) -> Tensor:
        return (kernel @ vec.unsqueeze(-1)).squeeze(-1)

    def kt_u(vec: Tensor) -> Tensor:
        return (vec.unsqueeze(-2) @ kernel).squeeze(-2)

    active: Tensor | None = None
    previous: tuple[Tensor, Tensor] | None = None
    for it in range(n_iters):
        if balanced:
            v = _freeze(active, b / kt_u(u), v)
            u = _freeze(active, a / k_v(v), u)
        else:
            u = _freeze(active, (a / k_v(v)) ** fi, u)
            v = _freeze(active, (b / kt_u(u)) ** fi, v)
        if tol is not None and (it + 1) % _CHECK_EVERY == 0 and it + 1 < n_iters:
            with torch.no_grad():
                rows, cols = u * k_v(v), v * kt_u(u)
                active, previous, done = _update_active(active, rows, cols, b, previous, balanced, tol)
            if done:
                break
    return u.unsqueeze(-1) * kernel * v.unsqueeze(-2)


def _update_active(
    active: Tensor | None,
    rows: Tensor,
    cols: Tensor,
    b: Tensor,
    previous: tuple[Tensor, Tensor] | None,
    balanced: bool,
    tol: float,
) -> tuple[Tensor | None, tuple[Tensor, Tensor], bool]:
    """Mark entries whose marginal error fell below ``tol``; returns (active, marginals, all_done)."""
    if balanced:
        err = (cols - b).abs().amax(-1)
    elif previous is None:
        return active, (rows, cols), False
    else:
        err = torch.maximum((rows - previous[0]).abs().amax(-1), (cols - previous[1]).abs().amax(-1))
    still = ~(err < tol)  # NaN error keeps iterating rather than freezing garbage as "converged"
    if active is not None:
        still = still & active
    if not bool(still.any()):
        return still, (rows, cols), True
    if bool(still.all()):
        return None, (rows, cols), False
    return still, (rows, cols), False


# --------------------------------------------------------------------------------------------------
# POT reference


def _import_pot():
    try:
        import ot
    except ImportError as err:
        raise ImportError(
            "sinkhorn_pot / backend='pot' needs the POT library (Python Optimal Transport): "
            "pip install 'pot>=0.9.5' (or install interplay-bio, which depends on it)"
        ) from err
    return ot


def sinkhorn_pot(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    *,
    reg: float,
    reg_m: float | None = None,
    n_iters: int = 100,
    tol: float | None = 1e-9,
    reg_type: str = "entropy",
) -> Tensor:
    """:func:`sinkhorn` computed by POT on torch tensors (POT's torch backend), one batch entry at a time.

    Balanced OT calls ``ot.sinkhorn(method="sinkhorn")``; unbalanced calls
    ``ot.unbalanced.sinkhorn_knopp_unbalanced`` with ``reg_type`` passed explicitly (POT >= 0.9.5
    changed its default to ``"kl"``; MOTCat's POT used ``"entropy"``). ``tol`` is POT's ``stopThr``
    (``None`` -> 0, i.e. run ``n_iters`` iterations); POT's own stopping rules differ from
    :func:`sinkhorn`'s, so compare the two with ``tol=None``. Gradients flow through POT's torch ops.

    Raises:
        ImportError: POT is not installed (with the pip command that fixes it).
    """
    a, b, cost = _prepare(a, b, cost, reg, reg_m, n_iters, tol, reg_type)
    ot = _import_pot()
    n, m = cost.shape[-2:]
    flat_cost = cost.reshape(-1, n, m)
    flat_a, flat_b = a.reshape(-1, n), b.reshape(-1, m)
    stop = 0.0 if tol is None else float(tol)
    plans = []
    with warnings.catch_warnings():
        # POT warns when it hits numItermax (expected with a fixed budget) and, for reg_type="entropy",
        # that it replaces the reference measure by ones (which is what "entropy" means).
        warnings.filterwarnings("ignore", message=".*did not converge.*")
        warnings.filterwarnings("ignore", message=".*reg_type = entropy.*")
        for index in range(flat_cost.shape[0]):
            if reg_m is None:
                plan = ot.sinkhorn(
                    flat_a[index],
                    flat_b[index],
                    flat_cost[index],
                    reg,
                    method="sinkhorn",
                    numItermax=n_iters,
                    stopThr=stop,
                )
            else:
                plan = ot.unbalanced.sinkhorn_knopp_unbalanced(
                    flat_a[index],
                    flat_b[index],
                    flat_cost[index],
                    reg,
                    reg_m,
                    reg_type=reg_type,
                    numItermax=n_iters,
                    stopThr=stop,
                )
            plans.append(plan)
    return torch.stack(plans).reshape(cost.shape)


# --------------------------------------------------------------------------------------------------
# MOTCat co-attention


def _check_backend(backend: str) -> None:
    if backend not in OT_BACKENDS:
        raise ValueError(f"backend must be one of {OT_BACKENDS}; got {backend!r}")


def _squared_distances(query: Tensor, key: Tensor, shift_by_min: bool) -> Tensor:
    """``||q_i - k_j||^2`` as ``[..., N, M]`` (of the min-shifted tokens when ``shift_by_min``).

    The same expansion ``|q|^2 + |k|^2 - 2 q.k`` that ``torch.cdist`` uses for large inputs, without
    its concatenated copies of ``q`` and without a shifted copy of ``q``: for ``q' = q - m`` (``m``
    the row minimum) ``|q'|^2 = |q|^2 - 2 m sum(q) + D m^2`` and ``q'.k = q.k - m sum(k)``, and
    ``sum(q)`` comes out of the same mat-mul as ``q.k`` (a row of ones appended to ``k``). Each of
    the ``N x D`` query entries is read three times (norm, min, mat-mul) and never copied.
    """
    dim = query.shape[-1]
    query_sq = torch.linalg.vector_norm(query, dim=-1, keepdim=True).square()  # [..., N, 1]
    if shift_by_min:
        key = key - key.amin(-1, keepdim=True)
        query_min = query.amin(-1, keepdim=True)
        ones = key.new_ones((*key.shape[:-2], 1, dim))
        products = query @ torch.cat([key, ones], dim=-2).transpose(-2, -1)  # [..., N, M + 1]
        dot, query_sum = products[..., :-1], products[..., -1:]
        query_sq = query_sq - 2 * query_min * query_sum + dim * query_min.square()
        dot = dot - query_min * key.sum(-1).unsqueeze(-2)
    else:
        dot = query @ key.transpose(-2, -1)
    key_sq = key.square().sum(-1).unsqueeze(-2)  # [..., 1, M]
    return (query_sq + key_sq - 2 * dot).clamp_min_(0)


def ot_coattention(
    query_tokens: Tensor,
    key_tokens: Tensor,
    *,
    reg: float = 0.05,
    reg_m: float | None = 0.5,
    n_iters: int = 100,
    backend: str = "torch",
    normalize_cost: bool = True,
    detach_cost: bool = True,
    return_plan: bool = True,
    shift_by_min: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """MOTCat's optimal-transport co-attention (Xu & Chen 2023, Eq. 2-5).

    ``cost = cdist(P, G) ** 2`` (divided by its detached max when ``normalize_cost``), the plan solves
    entropic OT between uniform marginals (unbalanced when ``reg_m`` is given, MOTCat's setting), and
    the query tokens are aggregated onto the key side: ``coattended = plan^T @ P``.

    Args:
        query_tokens: ``P [..., N, D]``, e.g. WSI patch embeddings (the tokens that get aggregated).
        key_tokens: ``G [..., M, D]``, e.g. genomic group embeddings (one output token per key).
        reg: entropic regularisation (MOTCat's ``eps``: 0.05 for BLCA/LUAD, 0.1 otherwise).
        reg_m: marginal relaxation (MOTCat's ``tau`` = 0.5); ``None`` gives balanced OT.
        n_iters: Sinkhorn iterations (early-stopped at tol 1e-9 per batch entry).
        backend: ``"torch"`` (:func:`sinkhorn`, log domain, batched) or ``"pot"`` (:func:`sinkhorn_pot`).
        normalize_cost: divide the cost by its (detached) max over each ``[N, M]`` matrix, as MOTCat.
        detach_cost: stop gradients through the plan, as MOTCat (gradients then reach ``P`` only
            through the aggregation); the solver then runs without building an autograd graph.
        return_plan: return the plan as the second element; ``False`` returns ``None`` there.
        shift_by_min: compute the cost on ``x - x.min(-1)`` for both token sets (MOTCat's
            ``normalize_feature``); the aggregation still uses the unshifted ``P``, as MOTCat.

    Returns:
        ``(coattended [..., M, D], plan [..., N, M] or None)``.
    """
    _check_backend(backend)
    for name, tokens in (("query_tokens", query_tokens), ("key_tokens", key_tokens)):
        if not isinstance(tokens, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(tokens).__name__}")
        if tokens.ndim < 2:
            raise ValueError(f"{name} must be at least 2-D [..., L, D]; got shape {tuple(tokens.shape)}")
        if not tokens.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {tokens.dtype}")
        # a detached cost is computed without a graph and checked instead of the (large) query
        # set: it is finite exactly when the tokens are, and is N/D times smaller
        if name == "key_tokens" or not detach_cost:
            _check_finite_tensor(tokens, name)
    if query_tokens.shape[-1] != key_tokens.shape[-1]:
        raise ValueError(
            f"query_tokens and key_tokens must share the feature dim D; got query_tokens "
            f"{tuple(query_tokens.shape)} and key_tokens {tuple(key_tokens.shape)}"
        )
    try:
        batch_shape = torch.broadcast_shapes(query_tokens.shape[:-2], key_tokens.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch dims of query_tokens {tuple(query_tokens.shape)} and key_tokens "
            f"{tuple(key_tokens.shape)} do not broadcast"
        ) from None

    if detach_cost:
        with torch.no_grad():
            cost = _squared_distances(query_tokens, key_tokens, shift_by_min)
        if not torch.isfinite(cost).all():
            _check_finite_tensor(query_tokens, "query_tokens")  # name the input when it is the cause
        cost = cost.expand(*batch_shape, query_tokens.shape[-2], key_tokens.shape[-2])
    else:
        query_for_cost, key_for_cost = query_tokens, key_tokens
        if shift_by_min:
            query_for_cost = query_tokens - query_tokens.amin(-1, keepdim=True)
            key_for_cost = key_tokens - key_tokens.amin(-1, keepdim=True)
        query_for_cost = query_for_cost.expand(*batch_shape, *query_tokens.shape[-2:])
        key_for_cost = key_for_cost.expand(*batch_shape, *key_tokens.shape[-2:])
        cost = torch.cdist(query_for_cost, key_for_cost) ** 2
    if normalize_cost:
        scale = cost.detach().amax(dim=(-2, -1), keepdim=True)
        cost = cost / scale.clamp_min(torch.finfo(cost.dtype).tiny)

    with torch.set_grad_enabled(torch.is_grad_enabled() and cost.requires_grad):
        if backend == "torch":
            plan = sinkhorn(None, None, cost, reg=reg, reg_m=reg_m, n_iters=n_iters)
        else:
            plan = sinkhorn_pot(None, None, cost, reg=reg, reg_m=reg_m, n_iters=n_iters)
    plan = plan.to(query_tokens.dtype)
    coattended = plan.transpose(-2, -1) @ query_tokens
    return coattended, (plan if return_plan else None)


class OTCoAttention(nn.Module):
    """Module form of :func:`ot_coattention` (MOTCat's ``OT_Attn_assem``); no learnable parameters.

    ``forward(query_tokens [..., N, D], key_tokens [..., M, D])`` returns
    ``(coattended [..., M, D], plan [..., N, M])``.
    """

    def __init__(
        self,
        reg: float = 0.05,
        reg_m: float | None = 0.5,
        n_iters: int = 100,
        backend: str = "torch",
        *,
        normalize_cost: bool = True,
        detach_cost: bool = True,
        shift_by_min: bool = False,
    ) -> None:
        super().__init__()
        _check_backend(backend)
        _check_reg(reg, reg_m, n_iters, None, "entropy")
        self.reg = reg
        self.reg_m = reg_m
        self.n_iters = n_iters
        self.backend = backend
        self.normalize_cost = normalize_cost
        self.detach_cost = detach_cost
        self.shift_by_min = shift_by_min

    def forward(self, query_tokens: Tensor, key_tokens: Tensor) -> tuple[Tensor, Tensor]:
        coattended, plan = ot_coattention(
            query_tokens,
            key_tokens,
            reg=self.reg,
            reg_m=self.reg_m,
            n_iters=self.n_iters,
            backend=self.backend,
            normalize_cost=self.normalize_cost,
            detach_cost=self.detach_cost,
            shift_by_min=self.shift_by_min,
        )
        assert plan is not None
        return coattended, plan

    def extra_repr(self) -> str:
        return (
            f"reg={self.reg}, reg_m={self.reg_m}, n_iters={self.n_iters}, backend={self.backend!r}, "
            f"normalize_cost={self.normalize_cost}, detach_cost={self.detach_cost}, "
            f"shift_by_min={self.shift_by_min}"
        )
