"""Multi-head latent attention (MLA): a joint low-rank KV latent and a decoupled RoPE key.

DeepSeek-AI 2024, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
Model", Sec. 2.1.2-2.1.3, Eqs. (9)-(19). For the hidden state ``h_t``:

    c^KV_t = W^DKV h_t                    (RMSNorm'd; d_c values)                              (9)
    k^C_t  = W^UK c^KV_t,  v^C_t = W^UV c^KV_t        (per head: d_head and d_v values)       (10, 11)
    c^Q_t  = W^DQ h_t                     (RMSNorm'd; d_cq values),  q^C_t = W^UQ c^Q_t       (12, 13)
    q^R_t  = RoPE(W^QR c^Q_t)             (per head, d_rope)                                   (14)
    k^R_t  = RoPE(W^KR h_t)               (d_rope, one key shared by all heads)                (15)
    q_t,i  = [q^C_t,i; q^R_t,i],   k_t,i = [k^C_t,i; k^R_t]                                   (16, 17)
    o_t,i  = sum_j softmax_j(q_t,i . k_j,i / sqrt(d_head + d_rope)) v^C_j,i                    (18)
    u_t    = W^O [o_t,1; ..; o_t,H]                                                            (19)

Only ``c^KV`` and ``k^R`` are cached: ``d_c + d_rope`` values per token and layer (576 in
DeepSeek-V2, against ``2 H d_head = 32768`` for multi-head attention; Table 1). RoPE cannot act on
``k^C`` (it would sit between ``W^UK`` and the query), which is why the rotary part is decoupled.

At decode the up-projections are absorbed (Sec. 2.1.2, "absorbed into W^Q and W^O"):
``q^C . (W^UK c) = ((W^UK)^T q^C) . c``, so each head's query is mapped into the latent space and
attention runs directly over the cached latents as one shared key/value head of width
``d_c + d_rope`` (multi-query attention); the output latent goes through ``W^UV`` and ``W^O`` once per
query instead of ``W^UV`` once per cached token. Computed as DeepSeek's own inference code does
("absorb" mode: per-head einsums, no merged ``W^O W^UV`` matrix is materialised).

:func:`latent_attention_reference` is the plain per-head loop of Eqs. (9)-(19) on a module's weights.
``d_cq=None`` projects queries straight from ``h`` (no query compression, as DeepSeek-V2-Lite).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interplay.core.attention.api import attend
from interplay.core.attention.masks import causal
from interplay.core.attention.rope import RotaryEmbedding

__all__ = [
    "MLACache",
    "MultiHeadLatentAttention",
    "kv_cache_bytes_per_token",
    "latent_attention_reference",
]


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_cache_bytes_per_token(kv_heads: int, head_dim: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes a key/value cache stores per token and layer: ``2 * kv_heads * head_dim`` values.

    Multi-head attention: ``kv_heads = heads``; grouped-query attention: ``kv_heads = groups``.
    """
    for name, value in (("kv_heads", kv_heads), ("head_dim", head_dim)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return 2 * int(kv_heads) * int(head_dim) * _element_size(dtype)


@dataclass
class MLACache:
    """Decoding cache of one MLA layer: the normalised latents ``c_kv [B, T, d_c]`` and the rotated
    shared keys ``k_rope [B, T, d_rope]`` — ``d_c + d_rope`` values per token."""

    c_kv: Tensor | None = None
    k_rope: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.c_kv is None else self.c_kv.shape[1]

    @property
    def values_per_token(self) -> int:
        return 0 if self.c_kv is None else self.c_kv.shape[-1] + self.k_rope.shape[-1]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.c_kv, self.k_rope) if t is not None)

    def update(self, c_kv: Tensor, k_rope: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``[B, L, d_c]`` latents and ``[B, L, d_rope]`` keys; return the whole cache."""
        if self.c_kv is None:
            self.c_kv, self.k_rope = c_kv, k_rope
        else:
            if c_kv.shape[0] != self.c_kv.shape[0] or c_kv.shape[-1] != self.c_kv.shape[-1]:
                raise ValueError(
                    f"c_kv {tuple(c_kv.shape)} does not match the cached latents {tuple(self.c_kv.shape)}"
                )
            self.c_kv = torch.cat((self.c_kv, c_kv), dim=1)
            self.k_rope = torch.cat((self.k_rope, k_rope), dim=1)
        return self.c_kv, self.k_rope


def _positive(name: str, value, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}"
        )
    return int(value)


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2 multi-head latent attention (self-attention, Eqs. 9-19).

    Args:
        dim: model width.
        heads: attention heads ``H``.
        d_c: KV latent width (512 in DeepSeek-V2).
        d_cq: query latent width (1536), or ``None`` for no query compression.
        d_head: per-head width of ``q^C`` and ``k^C`` (128).
        d_rope: width of the decoupled RoPE query/key (64).
        d_v: per-head value width (default ``d_head``).
        rope_base: RoPE base; norm_eps: RMSNorm epsilon.
        backend: attention backend for :func:`~interplay.core.attention.api.attend`.

    ``forward(x, cache=None, is_causal=True, absorb=None)``: ``x [B, L, dim]``; with an
    :class:`MLACache` the new tokens sit at positions ``cache.length ..`` and the cache grows by them.
    ``absorb`` (default: when a cache is given) runs attention in the latent space.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        d_c: int,
        d_cq: int | None,
        d_head: int,
        d_rope: int,
        *,
        d_v: int | None = None,
        rope_base: float = 10000.0,
        norm_eps: float = 1e-6,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.dim = _positive("dim", dim)
        self.heads = _positive("heads", heads)
        self.d_c = _positive("d_c", d_c)
        self.d_cq = _positive("d_cq", d_cq, allow_none=True)
        self.d_head = _positive("d_head", d_head)
        self.d_rope = _positive("d_rope", d_rope)
        if self.d_rope % 2:
            raise ValueError(f"d_rope must be even (RoPE rotates channel pairs), got {d_rope}")
        self.d_v = _positive("d_v", d_v if d_v is not None else d_head)
        self.scale = (self.d_head + self.d_rope) ** -0.5
        self.backend = backend
        h = self.heads
        self.w_dkv = nn.Linear(dim, d_c, bias=False)
        self.kv_norm = nn.RMSNorm(d_c, eps=norm_eps)
        self.w_kr = nn.Linear(dim, d_rope, bias=False)
        self.w_uk = nn.Linear(d_c, h * d_head, bias=False)
        self.w_uv = nn.Linear(d_c, h * self.d_v, bias=False)
        q_in = dim
        if self.d_cq is not None:
            self.w_dq = nn.Linear(dim, self.d_cq, bias=False)
            self.q_norm = nn.RMSNorm(self.d_cq, eps=norm_eps)
            q_in = self.d_cq
        else:
            self.w_dq = None
            self.q_norm = None
        self.w_uq = nn.Linear(q_in, h * d_head, bias=False)
        self.w_qr = nn.Linear(q_in, h * d_rope, bias=False)
        self.w_o = nn.Linear(h * self.d_v, dim, bias=False)
        self.rope = RotaryEmbedding(d_rope, base=rope_base)

    # -- cache arithmetic -------------------------------------------------------------------------------
    def cache_bytes_per_token(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """Bytes MLA caches per token and layer: ``(d_c + d_rope)`` values."""
        return (self.d_c + self.d_rope) * _element_size(dtype)

    def cache_bytes_table(self, gqa_groups: int = 8, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
        """Cache bytes per token and layer of MLA beside MHA and GQA with this module's heads and
        ``d_head`` (DeepSeek-V2 Table 1)."""
        return {
            "MHA": kv_cache_bytes_per_token(self.heads, self.d_head, dtype),
            f"GQA ({gqa_groups} groups)": kv_cache_bytes_per_token(gqa_groups, self.d_head, dtype),
            "MLA": self.cache_bytes_per_token(dtype),
        }

    # -- projections --------------------------------------------------------------------------------------
    def project(self, x: Tensor, positions: Tensor) -> dict[str, Tensor]:
        """Eqs. (9)-(15): ``c_kv [B, L, d_c]``, ``k_rope [B, L, d_rope]`` (rotated), ``q_c [B, H, L,
        d_head]`` and ``q_rope [B, H, L, d_rope]`` (rotated) for tokens at ``positions [L]``."""
        b, length, _ = x.shape
        c_kv = self.kv_norm(self.w_dkv(x))
        k_rope = self.rope(self.w_kr(x)[:, None], positions=positions)[:, 0]
        c_q = x if self.w_dq is None else self.q_norm(self.w_dq(x))
        q_c = self.w_uq(c_q).view(b, length, self.heads, self.d_head).transpose(1, 2)
        q_rope = self.w_qr(c_q).view(b, length, self.heads, self.d_rope).transpose(1, 2)
        return {"c_kv": c_kv, "k_rope": k_rope, "q_c": q_c, "q_rope": self.rope(q_rope, positions=positions)}

    def forward(
        self, x: Tensor, *, cache: MLACache | None = None, is_causal: bool = True, absorb: bool | None = None
    ) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B, L, {self.dim}], got {shape}")
        if cache is not None and not isinstance(cache, MLACache):
            raise TypeError(f"cache must be an MLACache, got {type(cache).__name__}")
        b, length, _ = x.shape
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + length, device=x.device)
        p = self.project(x, positions)
        c_kv, k_rope = p["c_kv"], p["k_rope"]
        if cache is not None:
            c_kv, k_rope = cache.update(c_kv, k_rope)
        absorb = cache is not None if absorb is None else bool(absorb)
        # a single query row sees every cached key anyway: no mask needed
        mask = causal() if is_causal and length > 1 else None
        if absorb:
            out = self._absorbed(p["q_c"], p["q_rope"], c_kv, k_rope, mask)
        else:
            out = self._expanded(p["q_c"], p["q_rope"], c_kv, k_rope, mask)
        return self.w_o(out.transpose(1, 2).reshape(b, length, self.heads * self.d_v))

    def _expanded(self, q_c, q_rope, c_kv, k_rope, mask) -> Tensor:
        """Eqs. (10)-(18) as written: per-head keys and values rebuilt from every cached latent."""
        b, t = c_kv.shape[:2]
        k_c = self.w_uk(c_kv).view(b, t, self.heads, self.d_head).transpose(1, 2)
        v = self.w_uv(c_kv).view(b, t, self.heads, self.d_v).transpose(1, 2)
        k_r = k_rope[:, None].expand(b, self.heads, t, self.d_rope)
        q = torch.cat((q_c, q_rope), dim=-1)
        k = torch.cat((k_c, k_r), dim=-1)
        return attend(q, k, v, mask=mask, scale=self.scale, backend=self.backend)

    def _absorbed(self, q_c, q_rope, c_kv, k_rope, mask) -> Tensor:
        """``W^UK`` folded into the query, ``W^UV`` applied to the output latent: attention over the
        cached ``[c_kv; k_rope]`` as one shared key head (``d_c + d_rope``) and value head (``d_c``)."""
        w_uk = self.w_uk.weight.view(self.heads, self.d_head, self.d_c)
        w_uv = self.w_uv.weight.view(self.heads, self.d_v, self.d_c)
        q_latent = torch.einsum("bhld,hdc->bhlc", q_c, w_uk)
        q = torch.cat((q_latent, q_rope), dim=-1)
        k = torch.cat((c_kv, k_rope), dim=-1)[:, None]
        o_latent = attend(q, k, c_kv[:, None], mask=mask, scale=self.scale, backend=self.backend)
        return torch.einsum("bhlc,hvc->bhlv", o_latent, w_uv)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.heads}, d_c={self.d_c}, d_cq={self.d_cq}, d_head={self.d_head}, "
            f"d_rope={self.d_rope}, d_v={self.d_v}"
        )


def latent_attention_reference(
    module: MultiHeadLatentAttention, x: Tensor, *, is_causal: bool = True
) -> Tensor:
    """Eqs. (9)-(19) with ``module``'s weights, one head and one query at a time (plain matmuls)."""
    b, length, _ = x.shape
    positions = torch.arange(length, device=x.device)
    h = x
    c_kv = module.kv_norm(h @ module.w_dkv.weight.T)  # (9)
    k_rope = module.rope((h @ module.w_kr.weight.T)[:, None], positions=positions)[:, 0]  # (15)
    c_q = h if module.w_dq is None else module.q_norm(h @ module.w_dq.weight.T)  # (12)
    outputs = []
    for i in range(module.heads):
        rows_k = slice(i * module.d_head, (i + 1) * module.d_head)
        rows_v = slice(i * module.d_v, (i + 1) * module.d_v)
        rows_r = slice(i * module.d_rope, (i + 1) * module.d_rope)
        k_c = c_kv @ module.w_uk.weight[rows_k].T  # (10)
        v_c = c_kv @ module.w_uv.weight[rows_v].T  # (11)
        q_c = c_q @ module.w_uq.weight[rows_k].T  # (13)
        q_r = module.rope((c_q @ module.w_qr.weight[rows_r].T)[:, None], positions=positions)[:, 0]  # (14)
        q = torch.cat((q_c, q_r), dim=-1)  # (16)
        k = torch.cat((k_c, k_rope), dim=-1)  # (17)
        head = torch.zeros(b, length, module.d_v, dtype=x.dtype, device=x.device)
        for t in range(length):
            last = t + 1 if is_causal else length
            scores = (k[:, :last] @ q[:, t, :, None])[..., 0] / math.sqrt(module.d_head + module.d_rope)
            head[:, t] = (torch.softmax(scores, dim=-1)[:, :, None] * v_c[:, :last]).sum(dim=1)  # (18)
        outputs.append(head)
    return torch.cat(outputs, dim=-1) @ module.w_o.weight.T  # (19)
