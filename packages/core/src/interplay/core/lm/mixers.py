"""Token mixers of the small causal language model, chosen by name.

Every mixer maps ``x [B, L, dim] -> [B, L, dim]`` and is causal: output ``t`` depends on inputs
``<= t`` only. The attention families come from :mod:`interplay.core.attention`; this module adds
the projections around them and three mixers of its own (with plain loop references, ``*_reference``):

* ``softmax``: causal softmax attention with RoPE (RoFormer, Su et al. 2021, Eq. 34) through
  :func:`~interplay.core.attention.api.attend` (SDPA's causal kernel).
* ``window``: the same with StreamingLLM's mask, ``n_sink`` sink tokens plus a causal window
  (Xiao et al. 2024, Sec. 3.2; :func:`~interplay.core.attention.masks.sinks`).
* ``linear``: causal linear attention with ``phi = elu + 1``, chunked (Katharopoulos et al. 2020,
  Eqs. 4-6 and 16-18; :func:`~interplay.core.attention.linear.causal_linear_attention`).
* ``nala``: NaLaFormer's norm-aware feature map in the same causal form (Meng et al. 2025, Sec. 4),
  followed by the paper's output gate ``LayerNorm(o) * SiLU(W_g x)``. The vision model's LePE
  (a depthwise convolution on V) is left out.
* ``moba``: MoBA block attention (Lu et al. 2025, Eqs. 2-5; top-k key blocks gated by the mean key,
  own block always kept) with RoPE (:func:`~interplay.core.attention.sparse.moba_attention`).
* ``rat``: RAT's layer (Wei et al. 2025, Sec. 3): a gated recurrence inside chunks plus softmax
  attention over chunk-end states (:class:`~interplay.core.attention.recurrent.RATBlock`; it brings
  its own RMSNorm and residual).
* ``mla``: DeepSeek-V2 multi-head latent attention, Eqs. 9-19
  (:class:`~interplay.core.attention.latent.MultiHeadLatentAttention`), no query compression.
* ``cmha``: ComplexFormer's complex multi-head attention (Shao et al. 2025, Eqs. 1-2 of
  :mod:`~interplay.core.attention.complex`).
* ``chunked``: TCNCA (Akhauri et al. 2023, "TCNCA: Temporal Convolution Network with Chunked
  Attention for Scalable Sequence Processing", Sec. 3): MEGA's EMA replaced by a dilated causal
  temporal convolution (TCN), then causal softmax attention inside non-overlapping chunks. Queries
  and keys are read from the TCN output, values from the input (as MEGA). The TCN is a stack of
  depthwise causal convolutions with dilations ``1, 2, 4, 8`` (kernel 3; receptive field 31)::

      h^(0) = x,   h^(i) = h^(i-1) + SiLU(conv_{d_i}(h^(i-1))),   conv_d(h)_t = sum_j w_j h_{t - j d}   (1)
      o = chunked_attention(W_q h, W_k h, W_v x, chunk)                                             (2)

  :func:`dilated_causal_conv` (``F.conv1d`` with left padding) against
  :func:`dilated_causal_conv_reference` (the sum in (1) as a loop); :func:`chunked_attention`
  (chunks folded into the batch, SDPA's causal kernel per chunk: ``O(L C)``) against
  :func:`chunked_attention_reference` (a loop over chunks).

"Deconstructed" mixers that do not look at the content (Tay et al. 2021, "Synthesizer: Rethinking
Self-Attention in Transformer Models", Sec. 3; RWKV's token shift):

* ``shift``: a learned causal token shift, ``y_t = W_o sum_{j < K} w_j ⊙ (W_v x)_{t - j}`` (per-channel
  weights over the last ``K`` tokens; :func:`dilated_causal_conv` with dilation 1).
* ``fixed``: fixed causal mixing over the whole past, one learned logit per head and offset
  (a Toeplitz "random synthesizer"): ``y_t = W_o sum_{s <= t} softmax_s(b_h[t - s]) (W_v x)_s``,
  ``b_h`` initialised to ALiBi-like slopes ``-m_h (t - s)`` (:func:`fixed_causal_mixing` against
  :func:`fixed_causal_mixing_reference`).

Hybrids keep other mixers in chosen layers: ``hybrid:linear@softmax=0,3`` is ``linear`` everywhere
except layers 0 and 3, which use ``softmax`` (several overrides: ``hybrid:shift@softmax=3@mla=1``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention.api import attend
from interplay.core.attention.complex import ComplexMultiHeadAttention
from interplay.core.attention.latent import MultiHeadLatentAttention
from interplay.core.attention.linear import causal_linear_attention
from interplay.core.attention.masks import causal, sinks
from interplay.core.attention.recurrent import RATBlock
from interplay.core.attention.rope import RotaryEmbedding
from interplay.core.attention.sparse import moba_attention
from interplay.core.errors import ConfigError

__all__ = [
    "MIXERS",
    "MixerOptions",
    "chunked_attention",
    "chunked_attention_reference",
    "dilated_causal_conv",
    "dilated_causal_conv_reference",
    "fixed_causal_mixing",
    "fixed_causal_mixing_reference",
    "layer_mixers",
    "make_mixer",
    "mixer_names",
]


@dataclass
class MixerOptions:
    """Settings of the mixers (each mixer reads the ones it needs)."""

    window: int = 64  # window: causal window (the current token counts)
    n_sink: int = 4  # window: sink tokens
    linear_chunk: int = 64  # linear, nala: rows per chunk of the chunked form
    block_size: int = 32  # moba: keys per block
    top_k: int = 3  # moba: blocks per query, own block included
    rat_chunk: int = 16  # rat: chunk length
    latent_dim: int | None = None  # mla: d_c (default dim // 2)
    rope_dim: int | None = None  # mla: d_rope (default head_dim // 2)
    attention_chunk: int = 64  # chunked: tokens per attention chunk
    conv_kernel: int = 3  # chunked: TCN kernel size
    conv_dilations: tuple[int, ...] = (1, 2, 4, 8)  # chunked: one depthwise conv per dilation
    shift_kernel: int = 4  # shift: tokens mixed (the current one included)
    max_len: int = 4096  # fixed: longest sequence (one logit per head and offset)
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in (
            "window",
            "linear_chunk",
            "block_size",
            "top_k",
            "rat_chunk",
            "attention_chunk",
            "conv_kernel",
            "shift_kernel",
            "max_len",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.n_sink, bool) or not isinstance(self.n_sink, numbers.Integral) or self.n_sink < 0:
            raise ValueError(f"n_sink must be a non-negative integer, got {self.n_sink!r}")
        if not self.conv_dilations or any(int(d) < 1 for d in self.conv_dilations):
            raise ValueError(f"conv_dilations must be positive integers, got {list(self.conv_dilations)}")


# -- plain references and fast paths of this module's own families --------------------------------------


def _check_bhld(fn: str, **tensors: Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{fn}: {name} must have shape [B, H, L, D], got {shape}")
    shapes = [t.shape[:3] for t in tensors.values()]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(
            f"{fn}: {', '.join(tensors)} must share [B, H, L], got "
            + ", ".join(str(tuple(t.shape)) for t in tensors.values())
        )


def _positive(fn: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
    return int(value)


def chunked_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, chunk: int, scale: float | None = None
) -> Tensor:
    """Causal softmax attention inside non-overlapping chunks of ``chunk`` tokens, one chunk at a time.

    ``q, k [B, H, L, D]``, ``v [B, H, L, Dv]``; the last chunk may be shorter.
    """
    _check_bhld("chunked_attention_reference", q=q, k=k, v=v)
    chunk = _positive("chunked_attention_reference", "chunk", chunk)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    outputs = []
    for start in range(0, q.shape[2], chunk):
        stop = min(q.shape[2], start + chunk)
        qc, kc, vc = q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop]
        scores = (qc @ kc.transpose(-2, -1)) * scale
        n = stop - start
        future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        outputs.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ vc)
    return torch.cat(outputs, dim=2)


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, chunk: int, scale: float | None = None) -> Tensor:
    """:func:`chunked_attention_reference` with the chunks folded into the heads: one SDPA causal call.

    The sequence is padded to a multiple of ``chunk`` at the end (padded keys come after every real
    query of their chunk, so the causal mask hides them). Time and memory ``O(L chunk)``.
    """
    _check_bhld("chunked_attention", q=q, k=k, v=v)
    chunk = _positive("chunked_attention", "chunk", chunk)
    b, h, length, _ = q.shape
    n = -(-length // chunk)
    pad = n * chunk - length

    def fold(x: Tensor) -> Tensor:
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(b, h * n, chunk, x.shape[-1])

    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), is_causal=True, scale=scale)
    return out.reshape(b, h, n * chunk, v.shape[-1])[:, :, :length]


def _check_conv(fn: str, x: Tensor, weight: Tensor, dilation) -> int:
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must have shape [B, L, C], got {shape}")
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{fn}: weight must have shape [C, K] = [{x.shape[-1]}, K], got {shape}")
    return _positive(fn, "dilation", dilation)


def dilated_causal_conv_reference(x: Tensor, weight: Tensor, dilation: int = 1) -> Tensor:
    """Depthwise dilated causal convolution as the sum it is: ``y_t = sum_j weight[:, j] x_{t - j d}``.

    ``x [B, L, C]``, ``weight [C, K]`` (tap ``j`` looks ``j * dilation`` tokens back; taps before the
    start read zeros).
    """
    dilation = _check_conv("dilated_causal_conv_reference", x, weight, dilation)
    out = torch.zeros_like(x)
    for t in range(x.shape[1]):
        for j in range(weight.shape[1]):
            s = t - j * dilation
            if s >= 0:
                out[:, t] = out[:, t] + weight[:, j] * x[:, s]
    return out


def dilated_causal_conv(x: Tensor, weight: Tensor, dilation: int = 1) -> Tensor:
    """:func:`dilated_causal_conv_reference` as one ``F.conv1d`` with ``(K - 1) * dilation`` zeros on
    the left (weights flipped: conv1d correlates, tap 0 is the current token)."""
    dilation = _check_conv("dilated_causal_conv", x, weight, dilation)
    channels, taps = weight.shape
    xt = F.pad(x.transpose(1, 2), ((taps - 1) * dilation, 0))
    out = F.conv1d(xt, weight.flip(-1).unsqueeze(1), dilation=dilation, groups=channels)
    return out.transpose(1, 2)


def _check_fixed(fn: str, v: Tensor, logits: Tensor) -> None:
    if not isinstance(v, Tensor) or v.dim() != 4:
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"{fn}: v must have shape [B, H, L, D], got {shape}")
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != v.shape[1]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{fn}: logits must have shape [H, max_len] with H = {v.shape[1]}, got {shape}")
    if logits.shape[1] < v.shape[2]:
        raise ValueError(f"{fn}: sequence length {v.shape[2]} exceeds the mixer's max_len {logits.shape[1]}")


def fixed_causal_mixing_reference(v: Tensor, logits: Tensor) -> Tensor:
    """Content-independent causal mixing, one row at a time: ``y_t = sum_{s<=t} softmax_s(b[t - s]) v_s``.

    ``v [B, H, L, D]``, ``logits [H, max_len]`` (``b_h[offset]``).
    """
    _check_fixed("fixed_causal_mixing_reference", v, logits)
    rows = []
    for t in range(v.shape[2]):
        weights = torch.softmax(logits[:, : t + 1].flip(-1), dim=-1)  # offsets t .. 0 for s = 0 .. t
        rows.append(torch.einsum("hs,bhsd->bhd", weights, v[:, :, : t + 1]))
    return torch.stack(rows, dim=2)


def fixed_causal_mixing(v: Tensor, logits: Tensor) -> Tensor:
    """:func:`fixed_causal_mixing_reference` as one ``[H, L, L]`` Toeplitz weight matrix times ``v``."""
    _check_fixed("fixed_causal_mixing", v, logits)
    length = v.shape[2]
    pos = torch.arange(length, device=v.device)
    offset = pos[:, None] - pos[None, :]
    scores = logits[:, offset.clamp_min(0)].masked_fill(offset < 0, float("-inf"))
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


# -- mixer modules ---------------------------------------------------------------------------------------


class _HeadsMixin:
    """Head splitting shared by the attention mixers."""

    dim: int
    heads: int
    head_dim: int

    def _split(self, t: Tensor) -> Tensor:
        b, length, _ = t.shape
        return t.view(b, length, self.heads, t.shape[-1] // self.heads).transpose(1, 2)

    def _merge(self, t: Tensor) -> Tensor:
        b, _, length, _ = t.shape
        return t.transpose(1, 2).reshape(b, length, -1)


def _check_heads(dim: int, heads: int, even: bool = True) -> int:
    if dim % heads or (even and (dim // heads) % 2):
        raise ConfigError(f"dim={dim} must split into heads={heads} heads of even width")
    return dim // heads


class SoftmaxMixer(_HeadsMixin, nn.Module):
    """``W_o attend(RoPE(W_q x), RoPE(W_k x), W_v x, mask)``; ``mask`` defaults to causal."""

    owns_residual = False

    def __init__(self, dim: int, heads: int, *, mask=None, rope_base: float = 10000.0) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, _check_heads(dim, heads)
        self.mask = mask if mask is not None else causal()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.rope = RotaryEmbedding(self.head_dim, base=rope_base)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        out = attend(self.rope(q), self.rope(k), v, mask=self.mask)
        return self.out(self._merge(out))


class LinearMixer(_HeadsMixin, nn.Module):
    """Causal linear attention ``W_o LinAttn_phi(W_q x, W_k x, W_v x)``, chunked; ``phi`` = elu+1 or NaLa.

    With ``gate`` (NaLaFormer): ``W_o (LayerNorm(o) * SiLU(W_g x))``.
    """

    owns_residual = False

    def __init__(
        self, dim: int, heads: int, *, feature_map: str = "elu", chunk: int = 64, gate: bool = False
    ):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, _check_heads(dim, heads, even=False)
        self.feature_map, self.chunk = feature_map, chunk
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.gate = nn.Linear(dim, dim, bias=False) if gate else None
        self.norm = nn.LayerNorm(self.head_dim) if gate else None
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        # the chunk length is a compute setting of the PyTorch form; CUDA runs the Triton kernel with
        # its own default (a power of two >= 16)
        chunk = None if x.is_cuda else self.chunk
        out = causal_linear_attention(q, k, v, feature_map=self.feature_map, chunk_size=chunk)
        if self.gate is not None:
            out = self.norm(out) * F.silu(self._split(self.gate(x)))
        return self.out(self._merge(out))


class MoBAMixer(_HeadsMixin, nn.Module):
    """``W_o MoBA(RoPE(W_q x), RoPE(W_k x), W_v x)`` with ``top_k`` blocks of ``block_size`` keys."""

    owns_residual = False

    def __init__(self, dim: int, heads: int, *, block_size: int, top_k: int, rope_base: float = 10000.0):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, _check_heads(dim, heads)
        self.block_size, self.top_k = block_size, top_k
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.rope = RotaryEmbedding(self.head_dim, base=rope_base)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        out = moba_attention(self.rope(q), self.rope(k), v, self.block_size, self.top_k)
        return self.out(self._merge(out))


class RATMixer(nn.Module):
    """:class:`~interplay.core.attention.recurrent.RATBlock` (input RMSNorm and residual included)."""

    owns_residual = True

    def __init__(self, dim: int, heads: int, *, chunk: int, rope_base: float = 10000.0) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.block = RATBlock(dim, heads, chunk, rope_base=rope_base)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class MLAMixer(nn.Module):
    """:class:`~interplay.core.attention.latent.MultiHeadLatentAttention`, causal, without a cache."""

    owns_residual = False

    def __init__(self, dim: int, heads: int, *, latent_dim: int, rope_dim: int, rope_base: float = 10000.0):
        super().__init__()
        head_dim = _check_heads(dim, heads, even=False)
        self.attn = MultiHeadLatentAttention(
            dim, heads, d_c=latent_dim, d_cq=None, d_head=head_dim, d_rope=rope_dim, rope_base=rope_base
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, is_causal=True)


class ComplexMixer(nn.Module):
    """:class:`~interplay.core.attention.complex.ComplexMultiHeadAttention`, causal."""

    owns_residual = False

    def __init__(self, dim: int, heads: int, *, rope_base: float = 10000.0) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.attn = ComplexMultiHeadAttention(dim, heads, rope_base=rope_base)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, is_causal=True)


class ChunkedMixer(_HeadsMixin, nn.Module):
    """TCNCA, Eqs. (1)-(2): a dilated causal TCN feeds queries and keys; causal softmax inside chunks."""

    owns_residual = False

    def __init__(self, dim: int, heads: int, *, chunk: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, _check_heads(dim, heads, even=False)
        self.chunk, self.dilations = chunk, tuple(int(d) for d in dilations)
        self.conv_weights = nn.ParameterList(
            [nn.Parameter(torch.randn(dim, kernel) / math.sqrt(kernel)) for _ in self.dilations]
        )
        self.qk = nn.Linear(dim, 2 * dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def tcn(self, x: Tensor) -> Tensor:
        h = x
        for weight, dilation in zip(self.conv_weights, self.dilations):
            h = h + F.silu(dilated_causal_conv(h, weight, dilation))
        return h

    def forward(self, x: Tensor) -> Tensor:
        q, k = (self._split(t) for t in self.qk(self.tcn(x)).chunk(2, dim=-1))
        out = chunked_attention(q, k, self._split(self.v(x)), self.chunk)
        return self.out(self._merge(out))


class ShiftMixer(nn.Module):
    """Content-independent token shift: ``W_o conv_K(W_v x)`` (per-channel weights over ``K`` tokens)."""

    owns_residual = False

    def __init__(self, dim: int, *, kernel: int) -> None:
        super().__init__()
        self.v = nn.Linear(dim, dim, bias=False)
        weight = torch.zeros(dim, kernel)
        weight[:, 0] = 1.0  # start as the identity on the current token
        self.weight = nn.Parameter(weight + 0.1 * torch.randn(dim, kernel) / math.sqrt(kernel))
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(dilated_causal_conv(self.v(x), self.weight, 1))


class FixedMixer(_HeadsMixin, nn.Module):
    """Content-independent causal mixing ``W_o fixed_causal_mixing(W_v x, b)`` with ALiBi-like init."""

    owns_residual = False

    def __init__(self, dim: int, heads: int, *, max_len: int) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, _check_heads(dim, heads, even=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])
        self.logits = nn.Parameter(-slopes[:, None] * torch.arange(max_len, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self._merge(fixed_causal_mixing(self._split(self.v(x)), self.logits)))


# -- registry -------------------------------------------------------------------------------------------

MixerFactory = Callable[[int, int, MixerOptions], nn.Module]

MIXERS: dict[str, tuple[MixerFactory, str]] = {
    "softmax": (
        lambda d, h, o: SoftmaxMixer(d, h, rope_base=o.rope_base),
        "causal softmax attention + RoPE (SDPA)",
    ),
    "window": (
        lambda d, h, o: SoftmaxMixer(d, h, mask=sinks(o.n_sink, o.window), rope_base=o.rope_base),
        "sliding window + attention sinks (StreamingLLM mask) + RoPE",
    ),
    "linear": (
        lambda d, h, o: LinearMixer(d, h, feature_map="elu", chunk=o.linear_chunk),
        "causal linear attention, phi = elu + 1, chunked",
    ),
    "nala": (
        lambda d, h, o: LinearMixer(d, h, feature_map="nala", chunk=o.linear_chunk, gate=True),
        "NaLaFormer norm-aware causal linear attention + output gate",
    ),
    "moba": (
        lambda d, h, o: MoBAMixer(d, h, block_size=o.block_size, top_k=o.top_k, rope_base=o.rope_base),
        "MoBA: top-k gated key blocks + RoPE",
    ),
    "rat": (
        lambda d, h, o: RATMixer(d, h, chunk=o.rat_chunk, rope_base=o.rope_base),
        "RAT: gated recurrence in chunks + attention over chunk ends",
    ),
    "mla": (
        lambda d, h, o: MLAMixer(
            d,
            h,
            latent_dim=o.latent_dim or d // 2,
            rope_dim=o.rope_dim or max(2, (d // h) // 2 // 2 * 2),
            rope_base=o.rope_base,
        ),
        "DeepSeek-V2 multi-head latent attention",
    ),
    "cmha": (
        lambda d, h, o: ComplexMixer(d, h, rope_base=o.rope_base),
        "ComplexFormer complex multi-head attention",
    ),
    "chunked": (
        lambda d, h, o: ChunkedMixer(
            d, h, chunk=o.attention_chunk, kernel=o.conv_kernel, dilations=o.conv_dilations
        ),
        "TCNCA: dilated causal TCN + causal softmax inside chunks",
    ),
    "shift": (
        lambda d, h, o: ShiftMixer(d, kernel=o.shift_kernel),
        "deconstructed: content-independent causal token shift",
    ),
    "fixed": (
        lambda d, h, o: FixedMixer(d, h, max_len=o.max_len),
        "deconstructed: content-independent causal mixing (learned per offset)",
    ),
}


def mixer_names() -> list[str]:
    """The plain mixer names (hybrids are built from them: ``hybrid:BASE@OTHER=i,j``)."""
    return list(MIXERS)


def _unknown(name: str, spec: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(name, list(MIXERS), n=2)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return ConfigError(
        f"unknown mixer {name!r} in {spec!r}{hint} (choose from {', '.join(MIXERS)}, or "
        "hybrid:BASE@OTHER=i,j)"
    )


def layer_mixers(spec: str, depth: int) -> list[str]:
    """The plain mixer name of each of ``depth`` layers for ``spec`` (a name or a hybrid)."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"mixer must be a non-empty name, got {spec!r}")
    if not spec.startswith("hybrid:"):
        if spec not in MIXERS:
            raise _unknown(spec, spec)
        return [spec] * depth
    base, *overrides = spec[len("hybrid:") :].split("@")
    if base not in MIXERS:
        raise _unknown(base, spec)
    if not overrides:
        raise ConfigError(f"hybrid mixer {spec!r} names no layers: write hybrid:BASE@OTHER=i,j")
    names = [base] * depth
    for part in overrides:
        other, sep, layers = part.partition("=")
        if not sep or not layers:
            raise ConfigError(f"hybrid mixer {spec!r}: {part!r} must read OTHER=i,j (layer indices)")
        if other not in MIXERS:
            raise _unknown(other, spec)
        for item in layers.split(","):
            try:
                index = int(item)
            except ValueError:
                raise ConfigError(f"hybrid mixer {spec!r}: layer {item!r} is not an integer") from None
            if not 0 <= index < depth:
                raise ConfigError(f"hybrid mixer {spec!r}: layer {index} outside 0..{depth - 1}")
            names[index] = other
    return names


def make_mixer(name: str, dim: int, heads: int, options: MixerOptions | None = None) -> nn.Module:
    """One plain mixer by name (see :data:`MIXERS`)."""
    if name not in MIXERS:
        raise _unknown(name, name)
    return MIXERS[name][0](dim, heads, options or MixerOptions())
