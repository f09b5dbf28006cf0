"""Channel (transposed) attention: softmax attention across channels instead of tokens.

Tokens ``x`` are ``[B, N, C]``; the channels are split into ``G`` groups (heads) of ``Cg = C / G``
channels, and per ``(batch, group)`` the functional form takes ``q, k, v`` of shape ``[B, G, N, Cg]``
(the attention contract's ``[B, H, L, D]`` layout, with ``H = G`` and ``L = N``). The attention
matrix is ``[B, G, Cg, Cg]``: every score is a sum over all ``N`` tokens, so each output token sees
global context, the cost is ``O(N Cg^2)`` per group (``O(N C^2 / G)`` in all) and nothing is
quadratic in ``N``. Three published variants, each one call of :func:`channel_attention`:

* **DaViT** channel group attention (Ding et al. 2022, "DaViT: Dual Attention Vision
  Transformers"), as PAPERS.md and the released code (``ChannelAttention.forward``) write it::

      A = softmax((k * Cg^-1/2)^T v)        # [Cg, Cg], softmax over the last dim
      out = (A q^T)^T                        # [N, Cg]:  out[n, c] = sum_d A[c, d] q[n, d]

  ``channel_attention(q, k, v)``. The paper writes ``(softmax(Q_i^T K_i / sqrt(Cg)) V_i^T)^T``;
  the code is the same expression with the roles renamed (code ``k, v, q`` = paper ``Q, K, V``).
  Since ``q, k, v`` are three slices of one ``qkv`` projection, the two differ only by which slice
  is called what; we follow the code so released DaViT weights load unchanged. Note the scale is
  ``Cg^-1/2`` although the contraction runs over ``N`` tokens (as released).
* **Restormer** MDTA, multi-Dconv head transposed attention (Zamir et al. 2022, "Restormer:
  Efficient Transformer for High-Resolution Image Restoration"), as released::

      q^, k^ = q / ||q||_N, k / ||k||_N      # L2-normalised along the tokens
      A = softmax((q^^T k^) * t)             # t: learnable temperature per head, [G, 1, 1]
      out = (A v^T)^T                        # out[n, c] = sum_d A[c, d] v[n, d]

  ``channel_attention(q, k, v, normalize=True, temperature=t)``. The paper writes
  ``V^ softmax(K^ Q^ / alpha)``; the released code multiplies by ``temperature`` (= ``1 / alpha``).
* **MANIQA** transposed attention block, TAB (Yang et al. 2022, "MANIQA: Multi-dimension
  Attention Network for No-Reference Image Quality Assessment"): one group over all channels,
  no normalisation::

      A = softmax(q^T k / sqrt(N))           # [C, C]   (q k^T in the paper's [C, N] layout)
      out = (A v^T)^T

  ``channel_attention(q, k, v, scores="qk")`` with ``G = 1``. In MANIQA the q/k/v projections are
  ``Linear(N, N)`` over the token axis of ``x^T``; build ``q = c_q(x.transpose(1, 2)).transpose(1,
  2)[:, None]`` to reproduce it. The released ``TABlock`` then does ``(attn @ v).transpose(1, 2)
  .reshape(B, C, N)``, which re-reads the ``[B, N, C]`` buffer as ``[B, C, N]`` and so mixes tokens
  and channels whenever ``N != C``; this module returns the un-scrambled ``out``; a bit-exact port
  applies that reshape itself.

:func:`channel_attention_reference` is the plain per-``(batch, group)`` loop of the same maths
(the ground truth for tests and fast paths). :class:`ChannelAttention` is DaViT's module and
:class:`TransposedAttention` Restormer's MDTA over ``[B, N, C]`` tokens.
"""

from __future__ import annotations

import numbers
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ChannelAttention",
    "TransposedAttention",
    "channel_attention",
    "channel_attention_reference",
]

ScoresForm = Literal["kv", "qk"]

# ``F.normalize``'s default, kept so normalised inputs match Restormer's released code.
_NORMALIZE_EPS = 1e-12


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int, int]:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [B, G, N, Cg], got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape [B, G, N, Cg] (4 dims), got {_shape(q)}")
    b, g, n, cg = q.shape
    if n < 1 or cg < 1:
        raise ValueError(f"q must have shape [B, G, N, Cg] with N >= 1 and Cg >= 1, got {_shape(q)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(
                f"{name} must have the same shape as q, [B, G, N, Cg] = {_shape(q)}, got {_shape(t)}"
            )
        if t.dtype != q.dtype:
            raise ValueError(f"{name} must have the same dtype as q ({q.dtype}), got {t.dtype}")
    return b, g, n, cg


def _resolve_scores(scores: str | None, normalize: bool) -> ScoresForm:
    if scores is None:
        return "qk" if normalize else "kv"
    if scores not in ("kv", "qk"):
        raise ValueError(f"scores must be 'kv' (DaViT), 'qk' (Restormer / MANIQA) or None, got {scores!r}")
    return scores  # type: ignore[return-value]


def _check_factor(name: str, factor: Tensor | None, b: int, g: int) -> None:
    """A tensor ``scale`` / ``temperature`` must be one number per (batch, group)."""
    if factor is None:
        return
    expected = (b, g, 1, 1)
    try:
        ok = torch.broadcast_shapes(tuple(factor.shape), expected) == expected
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must broadcast to [B, G, 1, 1] = {list(expected)} (one value per head, "
            f"e.g. [G, 1, 1] = [{g}, 1, 1]), got {_shape(factor)}"
        )


def _resolve_scale(
    scale: float | Tensor | None, form: ScoresForm, normalize: bool, n: int, cg: int, b: int, g: int
) -> float | Tensor:
    if scale is None:
        if normalize:
            return 1.0  # cosine scores; the temperature does the scaling (Restormer)
        return cg**-0.5 if form == "kv" else n**-0.5  # DaViT: Cg^-1/2; MANIQA: N^-1/2
    if isinstance(scale, Tensor):
        _check_factor("scale", scale, b, g)
        return scale
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        return float(scale)
    raise ValueError(f"scale must be a float, a tensor broadcasting to [B, G, 1, 1] or None, got {scale!r}")


def _prepare(q, k, v, scores, scale, normalize, temperature):
    b, g, n, cg = _check_qkv(q, k, v)
    form = _resolve_scores(scores, normalize)
    if temperature is not None and not isinstance(temperature, Tensor):
        raise ValueError(f"temperature must be a tensor of shape [G, 1, 1] = [{g}, 1, 1] or None")
    _check_factor("temperature", temperature, b, g)
    scale = _resolve_scale(scale, form, normalize, n, cg, b, g)
    # (left, right) form the [Cg, Cg] scores left^T right; ``mixed`` is what the scores mix.
    left, right, mixed = (k, v, q) if form == "kv" else (q, k, v)
    return form, scale, left, right, mixed


def channel_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scores: ScoresForm | None = None,
    scale: float | Tensor | None = None,
    normalize: bool = False,
    temperature: Tensor | None = None,
    return_attention: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Channel (transposed) attention over ``q, k, v`` of shape ``[B, G, N, Cg]``.

    Args:
        q, k, v: ``[B, G, N, Cg]``: ``G`` channel groups (heads), ``N`` tokens, ``Cg`` channels
            per group; equal shapes and dtypes.
        scores: which pair forms the ``[Cg, Cg]`` scores. ``"kv"`` (DaViT): ``A = softmax(s k^T
            v)``, output ``(A q^T)^T``. ``"qk"`` (Restormer, MANIQA): ``A = softmax(s q^T k)``,
            output ``(A v^T)^T``. Default: ``"qk"`` if ``normalize`` else ``"kv"``.
        scale: ``s``, a float or a tensor broadcasting to ``[B, G, 1, 1]`` (may require grad).
            Default ``Cg^-1/2`` for ``"kv"`` (DaViT), ``N^-1/2`` for ``"qk"`` (MANIQA), ``1``
            with ``normalize`` (Restormer). In the ``"kv"`` form it multiplies ``k`` before the
            product, as DaViT's code does.
        normalize: L2-normalise the two score operands along the tokens ``N`` (Restormer).
        temperature: learnable per-head multiplier of the scores, e.g. ``[G, 1, 1]`` (Restormer);
            anything broadcasting to ``[B, G, 1, 1]``.
        return_attention: also return the attention matrix ``[B, G, Cg, Cg]`` (rows sum to 1).

    Returns:
        ``out`` of shape ``[B, G, N, Cg]``, or ``(out, attention)`` with ``return_attention``.

    The three published variants::

        channel_attention(q, k, v)                                      # DaViT
        channel_attention(q, k, v, normalize=True, temperature=t)       # Restormer MDTA
        channel_attention(q, k, v, scores="qk")                         # MANIQA TAB (G = 1)

    Half-precision inputs take the softmax in float32 (as autocast would) and cast back.
    """
    form, scale, left, right, mixed = _prepare(q, k, v, scores, scale, normalize, temperature)
    if normalize:
        left = F.normalize(left, dim=-2, eps=_NORMALIZE_EPS)
        right = F.normalize(right, dim=-2, eps=_NORMALIZE_EPS)
    unit_scale = isinstance(scale, float) and scale == 1.0
    if form == "kv" and not unit_scale:
        logits = (left * scale).transpose(-1, -2) @ right
    else:
        logits = left.transpose(-1, -2) @ right
        if not unit_scale:
            logits = logits * scale
    if temperature is not None:
        logits = logits * temperature
    if logits.dtype in (torch.float16, torch.bfloat16):
        attention = logits.softmax(dim=-1, dtype=torch.float32).to(logits.dtype)
    else:
        attention = logits.softmax(dim=-1)
    # (A m^T)^T == m A^T; this order leaves the output contiguous as [B, G, N, Cg].
    out = mixed @ attention.transpose(-1, -2)
    return (out, attention) if return_attention else out


def channel_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scores: ScoresForm | None = None,
    scale: float | Tensor | None = None,
    normalize: bool = False,
    temperature: Tensor | None = None,
    return_attention: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Readable reference of :func:`channel_attention`: one ``[N, Cg]`` problem per (batch, group).

    Same arguments and result; slow (a Python loop over ``B * G``) but differentiable, for tests.
    """
    form, scale, left, right, mixed = _prepare(q, k, v, scores, scale, normalize, temperature)
    b, g, n, cg = q.shape
    per_head_scale = torch.broadcast_to(scale, (b, g, 1, 1)) if isinstance(scale, Tensor) else None
    per_head_temp = torch.broadcast_to(temperature, (b, g, 1, 1)) if temperature is not None else None
    outs, attns = [], []
    for bi in range(b):
        for gi in range(g):
            x, y, m = left[bi, gi], right[bi, gi], mixed[bi, gi]  # each [N, Cg]
            if normalize:
                x = x / x.norm(dim=0, keepdim=True).clamp_min(_NORMALIZE_EPS)
                y = y / y.norm(dim=0, keepdim=True).clamp_min(_NORMALIZE_EPS)
            logits = torch.einsum("nc,nd->cd", x, y)  # channel-by-channel, summed over tokens
            logits = logits * (per_head_scale[bi, gi, 0, 0] if per_head_scale is not None else scale)
            if per_head_temp is not None:
                logits = logits * per_head_temp[bi, gi, 0, 0]
            a = torch.softmax(
                logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, -1
            )
            a = a.to(logits.dtype)
            outs.append(torch.einsum("cd,nd->nc", a, m))  # out[n, c] = sum_d A[c, d] m[n, d]
            attns.append(a)
    out = torch.stack(outs).reshape(b, g, n, cg)
    attention = torch.stack(attns).reshape(b, g, cg, cg)
    return (out, attention) if return_attention else out


def _check_tokens(x: Tensor, dim: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != dim:
        got = _shape(x) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape [B, N, {dim}], got {got}")
    if x.shape[1] < 1:
        raise ValueError(f"x must have at least one token, shape [B, N >= 1, {dim}], got {_shape(x)}")


def _check_heads(dim: int, heads: int) -> None:
    if heads < 1 or dim < 1 or dim % heads:
        raise ValueError(f"dim={dim} must be a positive multiple of heads={heads} (channels per group)")


class ChannelAttention(nn.Module):
    """DaViT's channel group attention on tokens ``[B, N, C]`` (Ding et al. 2022).

    ``qkv = Linear(C, 3C, bias=qkv_bias)`` split into ``heads`` groups of ``C / heads`` channels;
    ``A = softmax((k Cg^-1/2)^T v)`` per group; ``out = (A q^T)^T``; groups concatenated; ``proj =
    Linear(C, C)``. Parameter names (``qkv``, ``proj``) match the released module, so its
    ``state_dict`` loads as is. DaViT builds it with ``qkv_bias=True``.
    """

    def __init__(self, dim: int, heads: int = 8, *, qkv_bias: bool = False) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, *, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``x``: ``[B, N, dim]`` -> ``[B, N, dim]`` (and the ``[B, heads, Cg, Cg]`` attention)."""
        _check_tokens(x, self.dim)
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out, attention = channel_attention(q, k, v, scores="kv", scale=self.scale, return_attention=True)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return (out, attention) if return_attention else out


class TransposedAttention(nn.Module):
    """Restormer's MDTA (Zamir et al. 2022) on tokens ``[B, N, C]``.

    ``qkv = Linear(C, 3C, bias)``, optionally followed (``dwconv=True``) by Restormer's 3x3
    depthwise convolution over the ``H x W`` token grid (pass ``size=(H, W)``, row-major tokens);
    per head ``A = softmax((q^^T k^) * temperature)`` with ``q, k`` L2-normalised along the tokens
    and a learnable ``temperature`` of shape ``[heads, 1, 1]`` (init 1); ``out = (A v^T)^T``;
    ``project_out = Linear(C, C, bias)``.

    Deviation from the released module, which works on ``[B, C, H, W]`` maps: the 1x1 convolutions
    are ``nn.Linear`` over tokens (same maths; a released ``[O, I, 1, 1]`` weight loads after
    ``.flatten(1)``), and the depthwise convolution is optional so the layer also serves token sets
    with no grid. Parameter names (``qkv``, ``qkv_dwconv``, ``project_out``, ``temperature``)
    follow the released code. Restormer uses ``bias=False``.
    """

    def __init__(self, dim: int, heads: int = 8, *, bias: bool = False, dwconv: bool = False) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=bias)
        self.qkv_dwconv = (
            nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
            if dwconv
            else None
        )
        self.project_out = nn.Linear(dim, dim, bias=bias)

    def forward(
        self, x: Tensor, size: tuple[int, int] | None = None, *, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x``: ``[B, N, dim]``; ``size``: ``(H, W)`` with ``H * W = N`` (needed with ``dwconv``)."""
        _check_tokens(x, self.dim)
        b, n, c = x.shape
        if size is not None and (len(size) != 2 or size[0] * size[1] != n):
            raise ValueError(f"size must be (H, W) with H * W = N = {n}, got {tuple(size)}")
        qkv = self.qkv(x)
        if self.qkv_dwconv is not None:
            if size is None:
                raise ValueError(f"size=(H, W) with H * W = N = {n} is required when dwconv=True")
            h, w = size
            grid = qkv.transpose(1, 2).reshape(b, 3 * c, h, w)
            qkv = self.qkv_dwconv(grid).flatten(2).transpose(1, 2)
        q, k, v = qkv.reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out, attention = channel_attention(
            q, k, v, scores="qk", normalize=True, temperature=self.temperature, return_attention=True
        )
        out = self.project_out(out.transpose(1, 2).reshape(b, n, c))
        return (out, attention) if return_attention else out
