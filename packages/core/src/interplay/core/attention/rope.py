"""Rotary position embedding (RoPE): rotate queries and keys so their dot product sees only offsets.

RoFormer (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding"):
``f(x, m) = R^d_{Theta, m} x`` (Eq. 14-15) with ``R`` block-diagonal, one 2-D rotation by ``m theta_i``
per pair of channels and ``theta_i = base^(-2(i - 1) / d)``, ``i = 1 .. d/2``. Then
``<R_m q, R_n k> = q^T R_{n - m} k`` (Eq. 16): the score depends on the positions only through
``n - m``. Computed without the matrix as ``x * cos(m theta) + rotate(x) * sin(m theta)`` (Eq. 34).

Channel pairing:

* rotate-half (default; GPT-NeoX / LLaMA layout): channel ``i`` pairs with ``i + d/2``;
* interleaved (``interleaved=True``; RoFormer's Eq. 34 / GPT-J layout): channel ``2i`` with ``2i + 1``.

The two are the same rotation up to a permutation of the channels.

Axial 2-D RoPE for image tokens (:func:`apply_rope_2d`; Heo et al. 2024, "Rotary Position Embedding
for Vision Transformer", axial frequencies): the first half of the head dim is rotated by the row
position and the second half by the column position, each half with its own ``d/2``-dim frequencies.

Positions may be any integers or floats (StreamingLLM's in-cache positions, CCA's ring positions, RAT's
chunk indices). Angles are computed in float64, the rotation in float32 (float64 for float64 inputs),
and the result is cast back to the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _head_dim(x: Tensor, multiple: int) -> int:
    if x.dim() < 2:
        raise ValueError(f"x must be [..., L, D], got shape {tuple(x.shape)}")
    dim = x.shape[-1]
    if dim == 0 or dim % multiple:
        raise ValueError(f"x's head dim must be a positive multiple of {multiple}, got {dim}")
    return dim


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def rope_frequencies(
    dim: int,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``theta_i = base^(-2i / dim)``, ``i = 0 .. dim/2 - 1`` (RoFormer Eq. 15), shape ``[dim // 2]``."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even integer, got {dim!r}")
    if not base > 0:
        raise ValueError(f"base must be positive, got {base!r}")
    exponents = torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim
    return (float(base) ** -exponents).to(dtype)


def _angles(x: Tensor, positions: Tensor | None, dim: int, base: float) -> Tensor:
    """``[L, dim/2]`` or ``[B, 1, L, dim/2]`` rotation angles (float64) for ``x [..., L, D]``."""
    length = x.shape[-2]
    if positions is None:
        positions = torch.arange(length, device=x.device)
    if not isinstance(positions, Tensor):
        positions = torch.as_tensor(positions, device=x.device)
    if positions.dim() == 1:
        if positions.shape[0] != length:
            raise ValueError(f"positions must have length L = {length}, got shape {tuple(positions.shape)}")
    elif positions.dim() == 2:
        if x.dim() != 4 or positions.shape != (x.shape[0], length):
            raise ValueError(
                f"positions [B, L] must match x [B, H, L, D] = {tuple(x.shape)}, got {tuple(positions.shape)}"
            )
    else:
        raise ValueError(f"positions must be [L] or [B, L], got shape {tuple(positions.shape)}")
    # angles in float64: large positions times small frequencies keep their precision
    inv_freq = rope_frequencies(dim, base, device=x.device, dtype=torch.float64)
    angles = positions.to(device=x.device, dtype=torch.float64)[..., None] * inv_freq
    return angles if positions.dim() == 1 else angles[:, None]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
    """Rotate channel pairs of ``x`` by the angles whose cos/sin are ``[..., L, D/2]``."""
    xc = x.to(cos.dtype)
    if interleaved:
        even, odd = xc[..., 0::2], xc[..., 1::2]
        out = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    else:
        first, second = xc.chunk(2, dim=-1)
        out = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    return out.to(x.dtype)


def apply_rope(
    x: Tensor, positions: Tensor | None = None, base: float = 10000.0, interleaved: bool = False
) -> Tensor:
    """Rotate ``x [B, H, L, D]`` (or any ``[..., L, D]``) by its token positions (RoFormer Eq. 34).

    ``positions``: ``[L]`` (shared by the batch) or ``[B, L]``; default ``0 .. L-1``. ``interleaved``:
    pair channels ``(2i, 2i+1)`` instead of ``(i, i + D/2)``.
    """
    dim = _head_dim(x, 2)
    angles = _angles(x, positions, dim, base)
    dtype = _compute_dtype(x.dtype)
    return _rotate(x, angles.cos().to(dtype), angles.sin().to(dtype), interleaved)


def apply_rope_2d(
    x: Tensor, rows: Tensor, cols: Tensor, base: float = 10000.0, interleaved: bool = False
) -> Tensor:
    """Axial 2-D RoPE: the first ``D/2`` channels rotated by ``rows``, the last ``D/2`` by ``cols``.

    ``rows``, ``cols``: ``[L]`` or ``[B, L]`` grid coordinates of each token (e.g. ``i // W``,
    ``i % W``). Each half uses :func:`apply_rope` with frequencies for ``D/2`` channels.
    """
    dim = _head_dim(x, 4)
    row_half, col_half = x.split(dim // 2, dim=-1)
    return torch.cat(
        (apply_rope(row_half, rows, base, interleaved), apply_rope(col_half, cols, base, interleaved)), dim=-1
    )


class RotaryEmbedding(nn.Module):
    """RoPE with cached cos/sin tables (one per device and compute dtype, grown on demand).

    ``forward(x, positions=None, offset=0)``: ``x [B, H, L, D]`` rotated by ``positions`` (``[L]`` or
    ``[B, L]``, computed directly) or by ``offset .. offset + L - 1`` (read from the cache), e.g. the
    index of the first new token when decoding against a KV cache.
    """

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.base = float(base)
        self.interleaved = bool(interleaved)
        self.register_buffer("inv_freq", rope_frequencies(dim, base, dtype=torch.float64), persistent=False)
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def cos_sin(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin of ``position * theta_i`` for positions ``0 .. length-1``, each ``[length, D/2]``."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be a non-negative integer, got {length!r}")
        key = (torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is None or cached[0].shape[0] < length:
            size = max(length, 2 * cached[0].shape[0] if cached is not None else length)
            positions = torch.arange(size, device=device, dtype=torch.float64)
            angles = positions[:, None] * self.inv_freq.to(device)
            cached = (angles.cos().to(dtype), angles.sin().to(dtype))
            self._cache[key] = cached
        return cached[0][:length], cached[1][:length]

    def forward(self, x: Tensor, positions: Tensor | None = None, offset: int = 0) -> Tensor:
        dim = _head_dim(x, 2)
        if dim != self.dim:
            raise ValueError(f"x's head dim ({dim}) differs from the embedding's dim ({self.dim})")
        if positions is not None:
            if offset:
                raise ValueError("offset applies only without explicit positions")
            return apply_rope(x, positions, self.base, self.interleaved)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        length = x.shape[-2]
        cos, sin = self.cos_sin(offset + length, x.device, _compute_dtype(x.dtype))
        return _rotate(x, cos[offset:], sin[offset:], self.interleaved)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, interleaved={self.interleaved}"
