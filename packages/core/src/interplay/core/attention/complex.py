"""ComplexFormer's complex multi-head attention (CMHA), as a real dot product that ``attend`` can run.

ComplexFormer (Shao et al. 2025, "ComplexFormer: Disruptively Advancing Transformer Inference Ability
via Head-Specific Complex Vector Attention", arXiv:2505.10222; PAPERS.md "ComplexFormer CMHA" and the
author code's ``ComplexMultiHeadAttentionV2``). The paper's per-head Euler transformation and adaptive
differential rotation ``exp[i(Adapt(AS_mn,i) + Delta(P_mn),i)]`` are Eq. (1) below (numbered here).
Each head's ``d_k`` channels are read as ``d_k / 2`` complex numbers (first half real parts, second
half imaginary parts) in polar form (Euler transform)::

    r = sqrt(re^2 + im^2 + 1e-9),    phi = atan2(im, re)

and the score of query ``m`` and key ``n`` in head ``h`` adapts the phase difference per head and
channel with a learned scaling ``delta_{h,i}`` and offset ``b_{h,i}``, plus a relative-position
rotation ``(m - n) g_i`` with ``g_i = 10000^(-2i / d_k)``::

    s_mn = sum_i r^q_mi r^k_ni cos(delta_hi (phi^q_mi - phi^k_ni) + b_hi + (m - n) g_i)              (1)

Since ``cos(a - c) = cos a cos c + sin a sin c``, (1) factorises exactly with::

    theta^q_mi = delta_hi phi^q_mi + b_hi + m g_i,    theta^k_ni = delta_hi phi^k_ni + n g_i
    s_mn = [r^q cos theta^q; r^q sin theta^q] . [r^k cos theta^k; r^k sin theta^k]                  (2)

so queries and keys are transformed once (:func:`polar_features`, ``O(L d)``) and any backend of
:func:`~interplay.core.attention.api.attend` (SDPA, FlexAttention with block masks, math) computes the
``L x L`` part. With ``delta = 1`` and ``b = 0``, ``r cos(phi + m g) = re cos(m g) - im sin(m g)``:
(2) is RoPE attention with rotate-half channel pairs (:mod:`~interplay.core.attention.rope`).

Scale: the author code applies none (``scale=1.0`` reproduces it); the default here is the usual
``d_k^-1/2``. :func:`complex_attention_reference` computes (1) directly, one query row at a time.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from interplay.core.attention.api import attend
from interplay.core.attention.masks import MaskSpec, causal
from interplay.core.attention.rope import rope_frequencies

__all__ = [
    "ComplexMultiHeadAttention",
    "complex_attention",
    "complex_attention_reference",
    "polar_features",
]

MAGNITUDE_EPS = 1e-9  # inside the square root of r, as the author code


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _polar(x: Tensor) -> tuple[Tensor, Tensor]:
    """Magnitude and phase of the ``d/2`` complex channels ``re + i im`` of ``x [..., d]``."""
    re, im = x.chunk(2, dim=-1)
    r = torch.sqrt(re * re + im * im + MAGNITUDE_EPS)
    # atan2's gradient is 0/0 at the origin: give (0, 0) the phase 0 with a zero gradient instead
    origin = (re == 0) & (im == 0)
    phi = torch.atan2(im, torch.where(origin, torch.ones_like(re), re))
    return r, phi


def _check_phase_params(name: str, t: Tensor | None, heads: int, half: int) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor) or tuple(t.shape) != (heads, half):
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must have shape [H, D/2] = [{heads}, {half}], got {shape}")


def _positions(positions: Tensor | None, length: int, default_start: int, device, name: str) -> Tensor:
    if positions is None:
        return torch.arange(default_start, default_start + length, device=device)
    positions = torch.as_tensor(positions, device=device)
    if positions.shape != (length,):
        raise ValueError(f"{name} must have shape [{length}], got {tuple(positions.shape)}")
    return positions


def polar_features(
    x: Tensor, delta: Tensor, offset: Tensor | None, positions: Tensor, base: float = 10000.0
) -> Tensor:
    """Eq. (2): ``[r cos theta; r sin theta]`` with ``theta = delta phi + offset + position g``.

    ``x [B, H, L, D]``; ``delta``, ``offset`` ``[H, D/2]`` (``offset=None`` for keys); ``positions [L]``.
    Computed in float32 (float64 for float64 inputs) and cast back.
    """
    out_dtype = x.dtype
    compute = _compute_dtype(x.dtype)
    r, phi = _polar(x.to(compute))
    g = rope_frequencies(x.shape[-1], base, device=x.device, dtype=torch.float64)
    rotation = (positions.to(torch.float64)[:, None] * g).to(compute)  # [L, D/2], angles in fp64
    theta = delta.to(compute)[None, :, None, :] * phi + rotation
    if offset is not None:
        theta = theta + offset.to(compute)[None, :, None, :]
    return torch.cat((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).to(out_dtype)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape [B, H, L, D], got {shape}")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise ValueError(
            "q, k, v must share [B, H] (the key phases depend on the head's delta: no grouped heads), "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must share the length, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or q.shape[-1] % 2:
        raise ValueError(
            "q and k need one even head dim (re and im halves), "
            f"got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )


def complex_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    delta: Tensor,
    offset: Tensor | None = None,
    *,
    mask: MaskSpec | Tensor | None = None,
    scale: float | None = None,
    q_positions: Tensor | None = None,
    k_positions: Tensor | None = None,
    base: float = 10000.0,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """CMHA through its factorisation (2): polar features, then :func:`attend`.

    Args:
        q: ``[B, H, Lq, D]``; k: ``[B, H, Lk, D]``; v: ``[B, H, Lk, Dv]`` (``D`` even: re | im halves).
        delta, offset: ``[H, D/2]`` phase scaling and offset (``offset`` ``b`` may be ``None``: 0).
        mask: as :func:`attend` (a MaskSpec for flex, or a boolean tensor).
        scale: default ``D^-1/2`` (the author code: 1).
        q_positions, k_positions: ``[Lq]``, ``[Lk]`` token positions (default: keys ``0 .. Lk-1``,
            queries the last ``Lq`` of them, as when decoding against a cache).
    """
    _check_qkv(q, k, v)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    _check_phase_params("delta", delta, h, d // 2)
    _check_phase_params("offset", offset, h, d // 2)
    q_pos = _positions(q_positions, lq, lk - lq, q.device, "q_positions")
    k_pos = _positions(k_positions, lk, 0, q.device, "k_positions")
    q_feat = polar_features(q, delta, offset, q_pos, base)
    k_feat = polar_features(k, delta, None, k_pos, base)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    return attend(q_feat, k_feat, v, mask=mask, scale=scale, dropout_p=dropout_p, backend=backend)


def complex_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    delta: Tensor,
    offset: Tensor | None = None,
    *,
    mask: Tensor | None = None,
    scale: float | None = None,
    q_positions: Tensor | None = None,
    k_positions: Tensor | None = None,
    base: float = 10000.0,
) -> Tensor:
    """Eq. (1) directly: per query row ``m`` the cosine of the adapted phase differences with every key.

    ``mask``: boolean, broadcastable to ``[B, H, Lq, Lk]`` (``True`` = may attend); rows with no
    visible key return zeros.
    """
    _check_qkv(q, k, v)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    _check_phase_params("delta", delta, h, d // 2)
    _check_phase_params("offset", offset, h, d // 2)
    q_pos = _positions(q_positions, lq, lk - lq, q.device, "q_positions").to(q.dtype)
    k_pos = _positions(k_positions, lk, 0, q.device, "k_positions").to(q.dtype)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    g = rope_frequencies(d, base, device=q.device, dtype=q.dtype)  # g_i = base^(-2i/d)
    r_q, phi_q = _polar(q)
    r_k, phi_k = _polar(k)
    dlt = delta.to(q.dtype)[None, :, None, :]  # [1, H, 1, D/2]
    off = 0.0 if offset is None else offset.to(q.dtype)[None, :, None, :]
    if mask is not None:
        mask = mask.expand(b, h, lq, lk)
    rows = []
    for m in range(lq):
        phase_diff = phi_q[:, :, m : m + 1] - phi_k  # [B, H, Lk, D/2]
        relative = (q_pos[m] - k_pos)[:, None] * g  # (m - n) g_i, [Lk, D/2]
        angle = dlt * phase_diff + off + relative
        scores = (r_q[:, :, m : m + 1] * r_k * torch.cos(angle)).sum(dim=-1) * scale  # [B, H, Lk]
        if mask is not None:
            visible = mask[:, :, m]
            scores = scores.masked_fill(~visible, float("-inf"))
            weights = torch.softmax(scores.masked_fill(~visible.any(-1, keepdim=True), 0.0), dim=-1)
            weights = weights * visible.any(-1, keepdim=True)
        else:
            weights = torch.softmax(scores, dim=-1)
        rows.append((weights[..., None] * v).sum(dim=2))  # [B, H, Dv]
    return torch.stack(rows, dim=2)


class ComplexMultiHeadAttention(nn.Module):
    """ComplexFormer's CMHA layer: ``W_o · CMHA(W_q x, W_k x, W_v x)`` with learned ``delta``, ``b``.

    Args:
        dim: model width; heads: number of heads (``dim / heads`` even).
        qkv_bias: bias in the projections (the author code has none).
        scale: score scale (default ``d_k^-1/2``; the author code uses 1).
        delta_init: ``"normal"`` (author code: ``N(0, (d_k/2)^-1/2)``) or ``"rope"`` (``delta = 1``: the
            layer starts as RoPE attention). ``b`` starts at 0 either way.
        mask: a MaskSpec applied on every call; attn_drop: attention dropout; rope_base: base of ``g_i``.
        backend: attention backend (``auto``, ``math``, ``sdpa``, ``flex``).

    ``forward(x [B, L, dim], *, is_causal=False, attn_mask=None, key_padding_mask=None)``:
    ``attn_mask`` boolean broadcastable to ``[B, H, L, L]`` and ``key_padding_mask [B, L]`` (``True`` =
    real token), as :class:`~interplay.core.nn.MultiHeadAttention`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qkv_bias: bool = False,
        scale: float | None = None,
        delta_init: str = "normal",
        mask: MaskSpec | None = None,
        attn_drop: float = 0.0,
        rope_base: float = 10000.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim={dim} must split into heads={heads} heads of even width (re | im)")
        if delta_init not in ("normal", "rope"):
            raise ValueError(f"delta_init must be 'normal' or 'rope', got {delta_init!r}")
        if mask is not None and not isinstance(mask, MaskSpec):
            raise TypeError(
                f"mask must be a MaskSpec (per-call tensors go to forward), got {type(mask).__name__}"
            )
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scale, self.mask, self.attn_drop = scale, mask, attn_drop
        self.rope_base, self.backend, self.delta_init = float(rope_base), backend, delta_init
        self.w_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.w_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.w_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.w_o = nn.Linear(dim, dim, bias=qkv_bias)
        self.delta = nn.Parameter(torch.empty(heads, self.head_dim // 2))
        self.phase_bias = nn.Parameter(torch.zeros(heads, self.head_dim // 2))
        self.reset_phase_parameters()

    def reset_phase_parameters(self) -> None:
        with torch.no_grad():
            if self.delta_init == "rope":
                self.delta.fill_(1.0)
            else:
                self.delta.normal_(0.0, (self.head_dim // 2) ** -0.5)
            self.phase_bias.zero_()

    def _mask(self, attn_mask, key_padding_mask, is_causal, batch, length, device):
        spec = self.mask
        if is_causal:
            spec = causal() if spec is None else spec & causal()
        dense = None
        if attn_mask is not None:
            if not isinstance(attn_mask, Tensor) or attn_mask.dtype != torch.bool:
                raise TypeError("attn_mask must be a boolean tensor (True = may attend)")
            dense = attn_mask
        if key_padding_mask is not None:
            if (
                not isinstance(key_padding_mask, Tensor)
                or key_padding_mask.dtype != torch.bool
                or tuple(key_padding_mask.shape) != (batch, length)
            ):
                raise ValueError(f"key_padding_mask must be a bool tensor of shape [{batch}, {length}]")
            kp = key_padding_mask[:, None, None, :]
            dense = kp if dense is None else dense & kp
        if dense is None:
            return spec
        if spec is not None:
            dense = dense & spec.dense(batch, self.heads, length, length, device)
        return dense

    def forward(
        self,
        x: Tensor,
        *,
        is_causal: bool = False,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B, L, {self.dim}], got {shape}")
        b, length, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(b, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.w_q(x)), heads(self.w_k(x)), heads(self.w_v(x))
        mask = self._mask(attn_mask, key_padding_mask, is_causal, b, length, x.device)
        out = complex_attention(
            q,
            k,
            v,
            self.delta,
            self.phase_bias,
            mask=mask,
            scale=self.scale,
            base=self.rope_base,
            dropout_p=self.attn_drop if self.training else 0.0,
            backend=self.backend,
        )
        return self.w_o(out.transpose(1, 2).reshape(b, length, self.dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, delta_init={self.delta_init!r}, scale={self.scale}"
