"""RBTransformer: inter-cortical electrode attention over band differential entropy tokens.

Paper: Bhatnagar et al., "A Brain Wave Encodes a Thousand Tokens: Modeling Inter-Cortical Neural
Interactions for Effective EEG-based Emotion Recognition" (arXiv:2511.13954, 2025; reference code
github.com/nnilayy/RBTransformer). Every window of ``C``
electrodes is ``C`` tokens of 4 band differential entropies (theta, alpha, beta, gamma); the model is

1. token embedding ``Linear(4 -> D)`` plus a learnable electrode identity embedding ``(1, C, D)``,
   then dropout;
2. ``depth`` pre-norm blocks ``x + MHSA(LN(x))``, ``x + FFN(LN(x))``: multi-head self-attention over
   the ``C`` electrodes (``C x C`` attention per head; ``qkv`` projection without bias, ``heads``
   heads of width ``head_dim``, so the inner width ``heads * head_dim`` may differ from ``D``,
   projected back to ``D``) and an FFN ``D -> 128 -> D`` with GELU;
3. mean over electrodes, LayerNorm, and the MLP head ``D -> 2D -> 2D -> D -> classes``.

Defaults follow the paper: ``D = 128``, ``depth = 4``, 6 heads of 32, dropout 0.1.

The attention over electrodes runs through :func:`interplay.core.attention.attend` (SDPA or the
math reference, chosen by the backend) in the normal path. ``forward(x, return_attention=True)``
instead computes the softmax weights explicitly and returns them with the logits: the same
numbers up to float rounding, so the weights that are plotted are the ones the model used
(the attention weights themselves are never dropped out, which keeps that statement exact in
training mode too).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from interplay.core.attention import attend
from interplay.core.errors import ConfigError, DataError
from interplay.eeg.registry import REGISTRY

__all__ = ["ElectrodeAttention", "RBTransformer", "RBTransformerBlock"]


class ElectrodeAttention(nn.Module):
    """Multi-head self-attention across electrodes: ``[B, C, D] -> [B, C, D]``.

    ``qkv`` has no bias (as in the reference); the ``heads * head_dim`` inner width is projected
    back to ``dim`` by a biased linear layer followed by dropout.
    """

    def __init__(
        self, dim: int, heads: int = 6, head_dim: int = 32, dropout: float = 0.0, backend: str = "auto"
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)
        self.backend = backend

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, c, _ = x.shape
        qkv = self.qkv(x).view(b, c, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each [B, H, C, head_dim]

    def forward(self, x: Tensor, *, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        b, c, _ = x.shape
        q, k, v = self._split(x)
        if return_attention:
            weights = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim), dim=-1)
            mixed = weights @ v
        else:
            mixed = attend(q, k, v, backend=self.backend)
        out = self.dropout(self.out(mixed.transpose(1, 2).reshape(b, c, self.heads * self.head_dim)))
        return (out, weights) if return_attention else out


class RBTransformerBlock(nn.Module):
    """Pre-norm block: ``x + MHSA(LN(x))`` then ``x + FFN(LN(x))`` with FFN ``D -> ffn_dim -> D`` (GELU)."""

    def __init__(
        self,
        dim: int,
        heads: int = 6,
        head_dim: int = 32,
        ffn_dim: int = 128,
        dropout: float = 0.1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = ElectrodeAttention(dim, heads, head_dim, dropout, backend)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, *, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if return_attention:
            mixed, weights = self.attention(self.attention_norm(x), return_attention=True)
        else:
            mixed = self.attention(self.attention_norm(x))
        x = x + mixed
        x = x + self.ffn(self.ffn_norm(x))
        return (x, weights) if return_attention else x


@REGISTRY.models.register(
    "rbtransformer",
    "RBTransformer: electrode x electrode attention over band differential entropy tokens",
)
class RBTransformer(nn.Module):
    """RBTransformer classifier of ``[B, C, n_bands]`` band-DE windows.

    Args:
        n_channels: electrodes ``C`` (DEAP 32, DREAMER 14, SEED 62).
        num_classes: output classes.
        n_bands: features per electrode (4 band DEs).
        dim: token width ``D``.
        depth: number of blocks.
        heads, head_dim: attention heads and their width (inner width ``heads * head_dim``).
        ffn_dim: hidden width of each block's FFN.
        dropout: after the embedding, in attention output, FFN and head.
        backend: attention backend for :func:`interplay.core.attention.attend`.
    """

    def __init__(
        self,
        n_channels: int,
        num_classes: int = 2,
        n_bands: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 6,
        head_dim: int = 32,
        ffn_dim: int = 128,
        dropout: float = 0.1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_channels", n_channels),
            ("n_bands", n_bands),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("head_dim", head_dim),
            ("ffn_dim", ffn_dim),
        ):
            if value < 1:
                raise ConfigError(f"model.params.{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ConfigError(f"model.params.num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.params.dropout must be in [0, 1), got {dropout}")
        self.n_channels, self.n_bands, self.num_classes, self.dim = n_channels, n_bands, num_classes, dim
        self.token_embedding = nn.Linear(n_bands, dim)
        # which electrode a token is: the only thing that breaks the blocks' permutation symmetry
        self.electrode_embedding = nn.Parameter(torch.randn(1, n_channels, dim) * 0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            RBTransformerBlock(dim, heads, head_dim, ffn_dim, dropout, backend) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(
            nn.Linear(dim, 2 * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * dim, 2 * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * dim, dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim, num_classes),
        )

    def _check(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.n_channels or x.shape[2] != self.n_bands:
            raise DataError(
                f"RBTransformer input has shape {tuple(x.shape)}, expected "
                f"[batch, {self.n_channels} electrodes, {self.n_bands} bands]"
            )

    def forward_features(
        self, x: Tensor, *, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Pooled representation ``[B, D]`` (mean over electrodes, then LayerNorm).

        With ``return_attention`` also the attention weights ``[depth, B, heads, C, C]`` (rows are
        queries and sum to 1).
        """
        self._check(x)
        tokens = self.embedding_dropout(self.token_embedding(x) + self.electrode_embedding)
        maps = []
        for block in self.blocks:
            if return_attention:
                tokens, weights = block(tokens, return_attention=True)
                maps.append(weights)
            else:
                tokens = block(tokens)
        pooled = self.norm(tokens.mean(dim=1))
        return (pooled, torch.stack(maps)) if return_attention else pooled

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.head(pooled)

    def forward(self, x: Tensor, *, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits ``[B, num_classes]``; with ``return_attention``, ``(logits, [depth, B, H, C, C])``."""
        if return_attention:
            pooled, maps = self.forward_features(x, return_attention=True)
            return self.forward_head(pooled), maps
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> Tensor:
        """Electrode x electrode attention ``[depth, B, heads, C, C]`` of ``x`` (no gradients)."""
        return self.forward_features(x, return_attention=True)[1]
