"""Transformer building blocks: stochastic depth, feed-forward, pre-norm transformer block."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from interplay.core.attention.bias import AttentionBias
from interplay.core.attention.masks import MaskSpec
from interplay.core.nn.attention import MultiHeadAttention


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop the whole residual branch per sample.

    Survivors are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity in eval.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> activation -> dropout -> Linear -> dropout."""

    def __init__(
        self,
        dim: int,
        hidden: int | None = None,
        *,
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        hidden = hidden or 4 * dim
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            activation(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(FFN(LN(x)))``.

    ``mask``, ``bias`` and ``backend`` go to its :class:`MultiHeadAttention` (see there).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        kv_heads: int | None = None,
        mask: MaskSpec | None = None,
        bias: AttentionBias | nn.Module | Callable[[int, int], AttentionBias] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(
            dim,
            heads,
            kv_heads=kv_heads,
            attn_drop=attn_drop,
            proj_drop=dropout,
            mask=mask,
            bias=bias,
            backend=backend,
        )
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: Tensor,
        *,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = x + self.drop_path(
            self.attn(
                self.norm1(x), attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal
            )
        )
        return x + self.drop_path(self.ffn(self.norm2(x)))
