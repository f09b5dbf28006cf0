"""Linear attention: kernel feature maps, the non-causal O(N) form, the causal chunked form, decoding.

Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention") replaces ``exp(q . k)`` by ``phi(q) . phi(k)`` for a feature
map ``phi``, so the ``N x N`` scores never need to exist (their Eq. 4-6)::

    o_i = scale * phi(q_i)^T (sum_j phi(k_j) v_j^T) / den_i,    den_i = phi(q_i)^T sum_j phi(k_j)   (1)

``den_i`` becomes ``den_i + eps`` (``normalize=True``, the default), ``max(den_i, denominator_min)``
(L2ViT), or ``1`` (``normalize=False``). The causal form sums over ``j <= i`` only (their
Eq. 16-18): a recurrence ``S_i = S_{i-1} + phi(k_i) v_i^T``, ``z_i = z_{i-1} + phi(k_i)`` with a
constant-size state (:func:`linear_attention_step`), computed for training in chunks of ``C`` rows
(flash-linear-attention; Yang et al. 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training", Sec. 3.3; PAPERS.md "Chunked linear attention")::

    S_i = S_{i-1} + K_i^T V_i            (fp32)                                                      (2)
    O_i = scale * (Q_i S_{i-1} + ((Q_i K_i^T) ⊙ causal) V_i)                                        (3)

and the normalised variant divides row ``t`` by ``q_t . cumsum(k)_t`` (:func:`chunk_linear_attention`
in PyTorch; :mod:`~interplay.core.attention.kernels.linear_chunked` in Triton, forward and backward).

Feature maps (``feature_map=``):

* ``"elu"``: ``phi(x) = elu(x) + 1`` (Katharopoulos et al. 2020, Sec. 3.2.1, Eq. 7);
* ``"relu"``: ``phi(x) = relu(x)``;
* ``"identity"``: ``phi(x) = x`` (plain un-normalised linear attention, as fla's ``chunk_linear_attn``);
* ``"nala"``: NaLaFormer's norm-aware map (Meng et al. 2025, "NaLaFormer: Norm-Aware Linear
  Attention for Transformer Models", Sec. 4; :func:`nala_feature_map`), as released::

      k <- k^3 (elementwise, sign kept);  k+ = relu(k), k- = relu(-k);  phi(k) = [k+; k-]
      p = 3 (0.5 + tanh ||q||);  q+- = (relu(+-q) / ||q||)^p;        phi(q) = [q+; q-]

  ``phi(q) . phi(k)`` sums only same-sign channel pairs, so it is non-negative; the query norm
  sets the power ``p`` and with it how spiky the attention is. ``mode="cosine"`` is the paper's
  cosine-based variant: ``phi(q) = |q/||q|| |^p [cos a_q; sin a_q]``, ``phi(k) = |k|^3 [cos a_k;
  sin a_k]`` with ``a = (pi/4) tanh(alpha x / ||x||)``, so ``phi(q) . phi(k) = sum_c |q^_c|^p
  |k_c|^3 cos(a_q,c - a_k,c) >= 0`` (``|a| <= pi/4``): opposite signs are damped smoothly instead
  of cut off;
* a callable ``phi`` applied to both ``q`` and ``k``, or a pair ``(phi_q, phi_k)``.

L2ViT's enhanced linear attention (Zheng et al. 2023, "The Linear Attention Resurrection in Vision
Transformer", Sec. 3.2, Eq. 5): ``phi = relu``, a learnable temperature ``tau_h`` per head
(initialised ``d^-1/2``) and the denominator clamped from below at 100::

    o_i = tau_h phi(q_i)^T (sum_j phi(k_j) v_j^T) / max(phi(q_i)^T sum_j phi(k_j), 100)           (4)

:func:`l2vit_linear_attention` and the module :class:`L2ViTLinearAttention` holding ``tau``.

Layout ``[B, H, L, D]`` (values may have their own head dim ``Dv``). Half-precision inputs are
computed in float32 and cast back. Plain O(L^2) references (:func:`linear_attention_reference`,
:func:`causal_linear_attention_reference`) materialise the ``L x L`` kernel matrix; every fast path
is tested against them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention.api import AttentionBackendError

__all__ = [
    "FEATURE_MAPS",
    "LINEAR_BACKENDS",
    "L2ViTLinearAttention",
    "LinearAttentionState",
    "causal_linear_attention",
    "causal_linear_attention_reference",
    "chunk_linear_attention",
    "chunk_linear_attention_reference",
    "elu_feature_map",
    "l2vit_linear_attention",
    "linear_attention",
    "linear_attention_reference",
    "linear_attention_step",
    "nala_feature_map",
    "nala_key_features",
    "nala_linear_attention",
    "nala_query_features",
    "relu_feature_map",
]

FeatureMap = str | Callable[[Tensor], Tensor] | tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]
FEATURE_MAPS = ("elu", "relu", "identity", "nala")
LINEAR_BACKENDS = ("auto", "torch", "triton")
# chunk length of the PyTorch chunked form (measured on CPU: 64 is at or near the fastest for D = 64)
DEFAULT_CHUNK_SIZE = 64
L2VIT_DENOMINATOR_MIN = 100.0
NALA_ALPHA = 20.0


# -- feature maps ------------------------------------------------------------------------------------


def elu_feature_map(x: Tensor) -> Tensor:
    """``elu(x) + 1`` (Katharopoulos et al. 2020, Eq. 7): positive, smooth, gradient everywhere."""
    return F.elu(x) + 1.0


def relu_feature_map(x: Tensor) -> Tensor:
    """``relu(x)`` (L2ViT's ``phi``)."""
    return F.relu(x)


def _identity(x: Tensor) -> Tensor:
    return x


def _check_nala_mode(mode: str) -> None:
    if mode not in ("split", "cosine"):
        raise ValueError(
            f"mode must be 'split' (released NaLaFormer) or 'cosine' (paper variant), got {mode!r}"
        )


def nala_query_features(
    q: Tensor, *, mode: str = "split", alpha: float = NALA_ALPHA, eps: float = 1e-6
) -> Tensor:
    """NaLaFormer's query map ``[..., D] -> [..., 2D]`` (module docstring; ``||q|| < eps`` is clamped)."""
    _check_nala_mode(mode)
    norm = q.norm(dim=-1, keepdim=True)
    direction = q / norm.clamp_min(eps)
    power = 3.0 * (0.5 + torch.tanh(norm))  # in [1.5, 4.5): the query norm sets the spikiness
    if mode == "split":
        return torch.cat((F.relu(direction).pow(power), F.relu(-direction).pow(power)), dim=-1)
    magnitude = direction.abs().pow(power)
    angle = torch.tanh(direction * alpha) * (math.pi / 4)
    return torch.cat((magnitude * torch.cos(angle), magnitude * torch.sin(angle)), dim=-1)


def nala_key_features(
    k: Tensor, *, mode: str = "split", alpha: float = NALA_ALPHA, eps: float = 1e-6
) -> Tensor:
    """NaLaFormer's key map ``[..., D] -> [..., 2D]``: cube, then sign split or cosine (module docstring)."""
    _check_nala_mode(mode)
    if mode == "split":
        cube = k.pow(3)
        return torch.cat((F.relu(cube), F.relu(-cube)), dim=-1)
    angle = torch.tanh(k / k.norm(dim=-1, keepdim=True).clamp_min(eps) * alpha) * (math.pi / 4)
    magnitude = k.abs().pow(3)
    return torch.cat((magnitude * torch.cos(angle), magnitude * torch.sin(angle)), dim=-1)


def nala_feature_map(
    q: Tensor, k: Tensor, *, mode: str = "split", alpha: float = NALA_ALPHA, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """``(phi(q), phi(k))`` of NaLaFormer, each ``[..., 2D]`` (module docstring)."""
    return (
        nala_query_features(q, mode=mode, alpha=alpha, eps=eps),
        nala_key_features(k, mode=mode, alpha=alpha, eps=eps),
    )


_NAMED_MAPS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "elu": (elu_feature_map, elu_feature_map),
    "relu": (relu_feature_map, relu_feature_map),
    "identity": (_identity, _identity),
    "nala": (nala_query_features, nala_key_features),
}


def _resolve_feature_map(feature_map: FeatureMap | None):
    if feature_map is None:
        return _NAMED_MAPS["identity"]
    if isinstance(feature_map, str):
        if feature_map not in _NAMED_MAPS:
            raise ValueError(
                f"unknown feature_map {feature_map!r} (choose from {', '.join(FEATURE_MAPS)}, a callable "
                "or a (query_map, key_map) pair)"
            )
        return _NAMED_MAPS[feature_map]
    if isinstance(feature_map, tuple):
        if len(feature_map) != 2 or not all(callable(f) for f in feature_map):
            raise ValueError("feature_map as a tuple must be (query_map, key_map), two callables")
        return feature_map
    if callable(feature_map):
        return feature_map, feature_map
    raise ValueError(f"feature_map must be a name, a callable or a pair of callables, got {feature_map!r}")


def _features(q: Tensor, k: Tensor, feature_map: FeatureMap | None) -> tuple[Tensor, Tensor]:
    query_map, key_map = _resolve_feature_map(feature_map)
    phi_q, phi_k = query_map(q), key_map(k)
    if (
        phi_q.shape[:-1] != q.shape[:-1]
        or phi_k.shape[:-1] != k.shape[:-1]
        or phi_q.shape[-1] != phi_k.shape[-1]
    ):
        raise ValueError(
            f"feature_map must keep [B, H, L] and give q and k one feature size, got {tuple(phi_q.shape)} "
            f"and {tuple(phi_k.shape)}"
        )
    return phi_q, phi_k


# -- argument checks ---------------------------------------------------------------------------------


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, *, causal: bool) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [B, H, L, D], got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape [B, H, L, D] (4 dims), got {_shape(t)}")
        if t.shape[2] < 1 or t.shape[3] < 1:
            raise ValueError(f"{name} must have L >= 1 and D >= 1, got {_shape(t)}")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise ValueError(
            f"q, k, v must share [B, H] (no grouped heads in linear attention), got {_shape(q)}, "
            f"{_shape(k)}, {_shape(v)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the head dim D, got q {_shape(q)} and k {_shape(k)}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must share the length L, got k {_shape(k)} and v {_shape(v)}")
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(
            f"causal linear attention needs q and k of one length, got q {_shape(q)} and k {_shape(k)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating point, got {q.dtype}")


def _resolve_scale(
    scale: float | Tensor | None, normalize: bool, q: Tensor, name: str = "scale"
) -> float | Tensor:
    """``None``: 1 with a normaliser (it would cancel), ``D^-1/2`` without (fla's convention)."""
    if scale is None:
        return 1.0 if normalize else q.shape[-1] ** -0.5
    if isinstance(scale, Tensor):
        expected = (q.shape[0], q.shape[1], 1, 1)
        try:
            ok = scale.dim() <= 4 and torch.broadcast_shapes(tuple(scale.shape), expected) == expected
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must be a float or a tensor broadcasting to [B, H, 1, 1] = {list(expected)}, "
                f"got shape {_shape(scale)}"
            )
        return scale
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        return float(scale)
    raise ValueError(f"{name} must be a float, a tensor or None, got {scale!r}")


def _key_mask(key_padding: Tensor | Sequence[int] | None, k: Tensor) -> Tensor | None:
    """``[B, 1, Lk, 1]`` float mask (1 = real key) from a boolean ``[B, Lk]`` mask or ``B`` lengths."""
    if key_padding is None:
        return None
    b, lk = k.shape[0], k.shape[2]
    padding = torch.as_tensor(key_padding, device=k.device)
    if padding.dtype == torch.bool:
        if padding.shape != (b, lk):
            raise ValueError(
                f"key_padding as a mask must be boolean [B, Lk] = [{b}, {lk}] (True = real key), "
                f"got {_shape(padding)}"
            )
        keep = padding
    else:
        if padding.shape != (b,) or padding.is_floating_point():
            raise ValueError(
                f"key_padding must be a boolean [B, Lk] mask or B = {b} integer lengths, got "
                f"{padding.dtype} of shape {_shape(padding)}"
            )
        if bool((padding < 0).any()) or bool((padding > lk).any()):
            raise ValueError(f"key_padding lengths must lie in [0, {lk}], got {padding.tolist()}")
        keep = torch.arange(lk, device=k.device)[None, :] < padding[:, None]
    return keep[:, None, :, None]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _finish(
    num: Tensor, den: Tensor | None, scale: float | Tensor, eps: float, denominator_min: float | None
):
    """``scale * num / den'`` with ``den' = max(den, denominator_min)`` or ``den + eps`` (Eq. 1)."""
    if isinstance(scale, Tensor):
        num = num * scale.to(num.dtype)
    elif scale != 1.0:
        num = num * scale
    if den is None:
        return num
    den = den.clamp_min(denominator_min) if denominator_min is not None else den + eps
    return num / den


def _check_normaliser(eps: float, denominator_min: float | None) -> None:
    if not (isinstance(eps, numbers.Real) and eps >= 0):
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")
    if denominator_min is not None and not (
        isinstance(denominator_min, numbers.Real) and denominator_min > 0
    ):
        raise ValueError(f"denominator_min must be a positive float or None, got {denominator_min!r}")


# -- non-causal --------------------------------------------------------------------------------------


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: FeatureMap | None = "elu",
    normalize: bool = True,
    scale: float | Tensor | None = None,
    eps: float = 1e-6,
    denominator_min: float | None = None,
    key_padding: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Non-causal linear attention, Eq. (1), in ``O(L (D Dv))`` time and ``O(D Dv)`` extra memory per head.

    Args:
        q: ``[B, H, Lq, D]``; k: ``[B, H, Lk, D]``; v: ``[B, H, Lk, Dv]`` (cross-attention allowed).
        feature_map: ``"elu"``, ``"relu"``, ``"identity"``, ``"nala"``, a callable, a pair of
            callables ``(query_map, key_map)``, or ``None`` (identity).
        normalize: divide by ``phi(q_i) . sum_j phi(k_j)`` (plus ``eps``, or clamped at
            ``denominator_min``); ``False`` gives ``scale * phi(q) (phi(k)^T v)``.
        scale: output multiplier, a float or a tensor broadcasting to ``[B, H, 1, 1]`` (L2ViT's
            ``tau``); default 1 with ``normalize``, ``D^-1/2`` without.
        denominator_min: clamp the denominator from below instead of adding ``eps`` (L2ViT: 100).
        key_padding: boolean ``[B, Lk]`` (``True`` = real key) or ``B`` integer lengths; padded keys
            take no part. A query with no real key gets zeros.
    """
    _check_qkv(q, k, v, causal=False)
    _check_normaliser(eps, denominator_min)
    scale = _resolve_scale(scale, normalize, q)
    keep = _key_mask(key_padding, k)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    phi_q, phi_k = _features(q.to(compute), k.to(compute), feature_map)
    v = v.to(compute)
    if keep is not None:
        phi_k = phi_k * keep.to(compute)
    context = phi_k.transpose(-2, -1) @ v  # [B, H, D', Dv]: sum_j phi(k_j) v_j^T
    num = phi_q @ context
    den = (phi_q @ phi_k.sum(dim=-2).unsqueeze(-1)) if normalize else None  # [B, H, Lq, 1]
    return _finish(num, den, scale, eps, denominator_min).to(out_dtype)


def linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: FeatureMap | None = "elu",
    normalize: bool = True,
    scale: float | Tensor | None = None,
    eps: float = 1e-6,
    denominator_min: float | None = None,
    key_padding: Tensor | Sequence[int] | None = None,
    causal: bool = False,
) -> Tensor:
    """Quadratic reference of Eq. (1): the ``[Lq, Lk]`` kernel matrix ``A = phi(q) phi(k)^T`` made explicit.

    ``o = scale * (A v) / den(A 1)``, with ``A`` masked to ``j <= i`` when ``causal``. Same arguments
    as :func:`linear_attention`; readable, differentiable, ``O(L^2)``.
    """
    _check_qkv(q, k, v, causal=causal)
    _check_normaliser(eps, denominator_min)
    scale = _resolve_scale(scale, normalize, q)
    keep = _key_mask(key_padding, k)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    phi_q, phi_k = _features(q.to(compute), k.to(compute), feature_map)
    kernel = phi_q @ phi_k.transpose(-2, -1)  # [B, H, Lq, Lk]
    if keep is not None:
        kernel = kernel * keep.transpose(-2, -1).to(compute)
    if causal:
        lq = q.shape[2]
        kernel = kernel * torch.ones(lq, lq, dtype=torch.bool, device=q.device).tril()
    num = kernel @ v.to(compute)
    den = kernel.sum(dim=-1, keepdim=True) if normalize else None
    return _finish(num, den, scale, eps, denominator_min).to(out_dtype)


def causal_linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: FeatureMap | None = "elu",
    normalize: bool = True,
    scale: float | Tensor | None = None,
    eps: float = 1e-6,
    denominator_min: float | None = None,
) -> Tensor:
    """Causal linear attention as the masked quadratic (parallel) form: Eq. (1) with ``j <= i``."""
    return linear_attention_reference(
        q,
        k,
        v,
        feature_map=feature_map,
        normalize=normalize,
        scale=scale,
        eps=eps,
        denominator_min=denominator_min,
        causal=True,
    )


# -- L2ViT ---------------------------------------------------------------------------------------------


def _tau_scale(tau: Tensor | float, q: Tensor) -> float | Tensor:
    heads = q.shape[1]
    if isinstance(tau, Tensor) and tau.dim() == 1:
        if tau.shape[0] != heads:
            raise ValueError(
                f"tau must have shape [H] = [{heads}] (one temperature per head), got {_shape(tau)}"
            )
        return tau.view(1, heads, 1, 1)
    return _resolve_scale(tau, True, q, name="tau")


def l2vit_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    tau: Tensor | float,
    *,
    denominator_min: float = L2VIT_DENOMINATOR_MIN,
    key_padding: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """L2ViT's enhanced linear attention, Eq. (4): ReLU features, per-head ``tau``, denominator >= 100.

    ``q, k``: ``[B, H, N, D]``; ``v``: ``[B, H, N, Dv]``; ``tau``: ``[H]`` (or a float, or anything
    broadcasting to ``[B, H, 1, 1]``). Returns ``[B, H, N, Dv]`` in ``O(N D Dv)``.
    """
    _check_qkv(q, k, v, causal=False)
    return linear_attention(
        q,
        k,
        v,
        feature_map="relu",
        normalize=True,
        scale=_tau_scale(tau, q),
        denominator_min=denominator_min,
        key_padding=key_padding,
    )


class L2ViTLinearAttention(nn.Module):
    """L2ViT's Eq. (4) with its per-head temperature ``tau`` ([heads], initialised ``head_dim^-1/2``).

    ``forward(q, k, v)`` with ``q, k, v`` of shape ``[B, heads, N, head_dim]`` (projections stay in
    the calling block, e.g. the L2ViT backbone's LGA block).
    """

    def __init__(self, heads: int, head_dim: int, *, denominator_min: float = L2VIT_DENOMINATOR_MIN) -> None:
        super().__init__()
        if heads < 1 or head_dim < 1:
            raise ValueError(f"heads and head_dim must be positive, got heads={heads}, head_dim={head_dim}")
        self.heads, self.head_dim, self.denominator_min = heads, head_dim, float(denominator_min)
        self.tau = nn.Parameter(torch.full((heads,), head_dim**-0.5))

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | Sequence[int] | None = None
    ) -> Tensor:
        if q.dim() == 4 and q.shape[1] != self.heads:
            raise ValueError(
                f"q must have shape [B, {self.heads}, N, D] (heads={self.heads}), got {_shape(q)}"
            )
        return l2vit_linear_attention(
            q, k, v, self.tau, denominator_min=self.denominator_min, key_padding=key_padding
        )

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, denominator_min={self.denominator_min}"


# -- NaLaFormer ----------------------------------------------------------------------------------------


def nala_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mode: str = "split",
    alpha: float = NALA_ALPHA,
    eps: float = 1e-6,
    key_padding: Tensor | Sequence[int] | None = None,
    rotary: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """NaLaFormer's non-causal attention as released: ``z = 1 / (phi(q) . mean phi(k) + eps)``.

    ``o = (phi(q) (phi(k)^T v / N)) z`` with ``N`` the number of real keys; ``rotary`` (e.g. 2-D RoPE
    in the vision model) is applied to ``phi(q)`` and ``phi(k)`` in the numerator only, as released.
    The causal counterpart is :func:`causal_linear_attention` with ``feature_map="nala"`` (there
    ``eps`` is added to the sum ``phi(q_t) . sum_{s<=t} phi(k_s)``, not the mean).
    """
    _check_qkv(q, k, v, causal=False)
    _check_normaliser(eps, None)
    keep = _key_mask(key_padding, k)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    phi_q, phi_k = nala_feature_map(q.to(compute), k.to(compute), mode=mode, alpha=alpha)
    v = v.to(compute)
    if keep is None:
        count = torch.full((1, 1, 1, 1), float(k.shape[2]), dtype=compute, device=k.device)
    else:
        phi_k = phi_k * keep.to(compute)
        count = keep.to(compute).sum(dim=2, keepdim=True).clamp_min(1.0)  # [B, 1, 1, 1]
    z = 1.0 / (phi_q @ (phi_k.sum(dim=-2, keepdim=True) / count).transpose(-2, -1) + eps)
    num_q, num_k = (rotary(phi_q), rotary(phi_k)) if rotary is not None else (phi_q, phi_k)
    context = (num_k.transpose(-2, -1) @ v) / count
    return ((num_q @ context) * z).to(out_dtype)


# -- causal: chunked form, dispatcher, decoding ------------------------------------------------------------


def _check_chunk(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def chunk_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Un-normalised causal linear attention in chunks, Eqs. (2)-(3), in PyTorch.

    ``o_t = scale * sum_{s <= t} (q_t . k_s) v_s`` for ``q, k`` ``[B, H, T, D]`` (features: no map
    is applied) and ``v`` ``[B, H, T, Dv]``. States ``S_i`` are per-chunk ``K_i^T V_i`` summed with
    an exclusive cumulative sum in fp32 (all chunks at once, no Python loop); the intra-chunk term
    is a ``C x C`` masked product. Cost ``O(T C (D + Dv) + T D Dv)``; memory ``O(T D Dv / C)``.
    """
    _check_qkv(q, k, v, causal=True)
    chunk = _check_chunk(chunk_size)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    n = -(-t // chunk)
    pad = n * chunk - t

    def chunks(x: Tensor) -> Tensor:
        x = x.to(compute)
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(b, h, n, chunk, x.shape[-1])

    qc, kc, vc = chunks(q), chunks(k), chunks(v)
    causal_mask = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-2, -1)).masked_fill(~causal_mask, 0.0)
    out = scores @ vc  # intra-chunk term
    if n > 1:
        # inclusive prefix sums of K_i^T V_i (no state after the last chunk is needed); chunk i reads
        # S_{i-1} = prefix[i - 1], chunk 0 reads the zero state
        prefix = (kc[:, :, :-1].transpose(-2, -1) @ vc[:, :, :-1]).cumsum(dim=2)  # [B, H, n-1, D, Dv]
        out = torch.cat((out[:, :, :1], out[:, :, 1:] + qc[:, :, 1:] @ prefix), dim=2)
    out = out.reshape(b, h, n * chunk, dv)[:, :, :t]
    if scale != 1.0:
        out = out * scale
    return out.to(out_dtype)


def chunk_linear_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, scale: float = 1.0) -> Tensor:
    """Quadratic reference of :func:`chunk_linear_attention`: ``scale * tril(q k^T) v``."""
    return causal_linear_attention_reference(q, k, v, feature_map=None, normalize=False, scale=scale)


def _triton_available() -> bool:
    from interplay.core.attention.kernels import triton_available

    return triton_available()


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: FeatureMap | None = "elu",
    normalize: bool = True,
    scale: float | Tensor | None = None,
    eps: float = 1e-6,
    denominator_min: float | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Causal linear attention ``o_t = scale * phi(q_t)^T S_t / den_t`` (Eq. 1 with ``j <= t``), chunked.

    Args:
        q, k: ``[B, H, T, D]``; v: ``[B, H, T, Dv]``.
        feature_map, normalize, scale, eps, denominator_min: as :func:`linear_attention`; the
            normaliser is ``phi(q_t) . cumsum(phi(k))_t``.
        chunk_size: rows per chunk ``C`` (default 64; 16 in the Triton interpreter).
        backend: ``"torch"`` (:func:`chunk_linear_attention`), ``"triton"`` (kernels in
            :mod:`~interplay.core.attention.kernels.linear_chunked`: CUDA, or CPU under
            ``TRITON_INTERPRET=1``), or ``"auto"``: Triton on CUDA when installed, PyTorch otherwise.
    """
    _check_qkv(q, k, v, causal=True)
    _check_normaliser(eps, denominator_min)
    if backend not in LINEAR_BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r} for causal linear attention (choose from auto, torch, triton)"
        )
    if chunk_size is not None:
        _check_chunk(chunk_size)
    scale = _resolve_scale(scale, normalize, q)
    if backend == "auto":
        backend = "triton" if q.device.type == "cuda" and _triton_available() else "torch"
    out_dtype = v.dtype
    if backend == "triton":
        from interplay.core.attention.kernels.linear_chunked import (
            check_triton_device,
            chunk_linear_attention_triton,
        )

        check_triton_device(q)
        if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise AttentionBackendError(f"backend 'triton' takes float32, float16 or bfloat16, not {q.dtype}")
        phi_q, phi_k = _features(q, k, feature_map)
        num = chunk_linear_attention_triton(phi_q, phi_k, v, scale=1.0, chunk_size=chunk_size).float()
        compute = torch.float32
    else:
        compute = _compute_dtype(q.dtype)
        phi_q, phi_k = _features(q.to(compute), k.to(compute), feature_map)
        num = chunk_linear_attention(
            phi_q,
            phi_k,
            v.to(compute),
            chunk_size=chunk_size if chunk_size is not None else DEFAULT_CHUNK_SIZE,
        )
    den = None
    if normalize:
        phi_q, phi_k = phi_q.to(compute), phi_k.to(compute)
        den = (phi_q * phi_k.cumsum(dim=-2)).sum(dim=-1, keepdim=True)  # phi(q_t) . sum_{s<=t} phi(k_s)
    return _finish(num, den, scale, eps, denominator_min).to(out_dtype)


@dataclass
class LinearAttentionState:
    """Decoding state of causal linear attention: ``S = sum_s phi(k_s) v_s^T`` ``[B, H, D', Dv]`` and
    ``z = sum_s phi(k_s)`` ``[B, H, D']`` (fp32, or fp64 for fp64 inputs; constant size), after
    ``length`` tokens."""

    S: Tensor
    z: Tensor
    length: int = 0

    @classmethod
    def zeros(
        cls, batch: int, heads: int, feature_dim: int, value_dim: int, device=None, dtype=torch.float32
    ) -> LinearAttentionState:
        return cls(
            S=torch.zeros(batch, heads, feature_dim, value_dim, device=device, dtype=dtype),
            z=torch.zeros(batch, heads, feature_dim, device=device, dtype=dtype),
        )


def linear_attention_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: LinearAttentionState | None = None,
    *,
    feature_map: FeatureMap | None = "elu",
    normalize: bool = True,
    scale: float | Tensor | None = None,
    eps: float = 1e-6,
    denominator_min: float | None = None,
) -> tuple[Tensor, LinearAttentionState]:
    """Recurrent causal linear attention from a state (Katharopoulos et al. 2020, Eq. 18-20).

    ``q, k``: ``[B, H, L, D]``, ``v``: ``[B, H, L, Dv]`` — the next ``L`` tokens (``L = 1`` while
    decoding; a prompt may come in one call). Returns ``(o, new_state)`` with ``o`` equal to the
    rows of :func:`causal_linear_attention` over the whole sequence so far. The state has
    constant size whatever the position; ``state=None`` starts from zeros.
    """
    _check_qkv(q, k, v, causal=True)
    _check_normaliser(eps, denominator_min)
    scale = _resolve_scale(scale, normalize, q)
    out_dtype = v.dtype
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32  # the state's dtype
    phi_q, phi_k = _features(q.to(compute), k.to(compute), feature_map)
    v32 = v.to(compute)
    b, h = q.shape[:2]
    if state is None:
        state = LinearAttentionState.zeros(b, h, phi_k.shape[-1], v.shape[-1], device=q.device, dtype=compute)
    elif state.S.shape != (b, h, phi_k.shape[-1], v.shape[-1]) or state.z.shape != (b, h, phi_k.shape[-1]):
        raise ValueError(
            f"state does not match the inputs: S {_shape(state.S)}, z {_shape(state.z)}, expected "
            f"S [{b}, {h}, {phi_k.shape[-1]}, {v.shape[-1]}]"
        )
    num = phi_q @ state.S.to(compute)
    if q.shape[2] > 1:
        num = num + chunk_linear_attention(phi_q, phi_k, v32)
    else:
        num = num + (phi_q * phi_k).sum(-1, keepdim=True) * v32
    den = None
    if normalize:
        den = (phi_q * (state.z.to(compute).unsqueeze(2) + phi_k.cumsum(dim=-2))).sum(dim=-1, keepdim=True)
    out = _finish(num, den, scale, eps, denominator_min).to(out_dtype)
    new_state = LinearAttentionState(
        S=state.S.to(compute) + phi_k.transpose(-2, -1) @ v32,
        z=state.z.to(compute) + phi_k.sum(dim=-2),
        length=state.length + q.shape[2],
    )
    return out, new_state
