"""Orion-MSP: a tabular in-context learner with multi-scale sparse row attention and a Perceiver memory.

Bouadi, Seth, Tanna, Sankarapu, "Orion-MSP: Multi-Scale Sparse Attention for Tabular In-Context
Learning" (Lexsi Labs, arXiv:2511.02818, 2025), extending TabICL (Qu, Holzmüller, Varoquaux, Le Morvan,
"TabICL: A Tabular Foundation Model for In-Context Learning on Large Data", ICML 2025). A table of
``n`` rows (the first ``T`` labelled: the context) and ``F`` features goes through four stages:

1. **Column-wise embedding** (TabICL's "distribution-aware feature embedding"): each column's
   values ``x_j in R^n`` are lifted to ``R^{n x d}`` by ``Linear(1, d)`` and passed through induced
   set-attention blocks (ISAB, Lee et al. 2019, Eq. 9-10): ``H = MAB(I, X_train)`` (inducing points
   ``I`` attend to the *training* rows only), ``X' = MAB(X, H)`` (every row reads ``H``). The cell
   embedding is ``e_ij = x_ij * W(X'_ij) + b(X'_ij)``; test rows never shape a column's statistics.
2. **Multi-scale sparse row interaction** (Orion-MSP's core contribution): the ``F`` cell
   embeddings of a row are mean-pooled in groups of ``s`` consecutive features for every scale
   ``s in (1, 4, 16)``; each scale has its own encoder stack over ``[CLS x 4 | GLOBAL x 2 | groups]``
   with rotary positions (TabICL's RoPE, base 100,000) and the block-sparse mask: special tokens <->
   every token, groups see ``|i - j| <= window`` (4) plus random links (BigBird). The CLS outputs are
   averaged over scales and concatenated: the row embedding ``r_i in R^{4d}``.
3. **Perceiver memory** (Orion-MSP's cross-component memory): ``M`` latent slots are written by
   cross-attention from the *training* rows only (then self-attention among the latents), and every
   row (train and test) reads them by cross-attention (residual). Test rows never reach the memory.
4. **ICL transformer** (TabICL's dataset-wise ICL): training rows get their label embedding added (label
   injection), every row attends to the training rows only (test rows never see each other), and a
   head maps each test row to logits over ``max_classes`` (10) classes.

The block-sparse attention runs through :func:`interplay.core.attention.attend` with
:func:`~interplay.core.attention.masks.block_sparse` (compiled FlexAttention with a ``BlockMask`` on
CUDA, SDPA with the dense mask on CPU) or, on CPU for long token sequences, through the exact gather
path :func:`~interplay.core.attention.banded.block_sparse_attention` (same pattern, same random links,
``O(L)`` instead of ``O(L^2)``; ``row_attention`` picks). The released code's mask computes
``(dist <= window) * 0.0 + (-inf)``, which makes every in-band score ``-inf`` and drops the band; the
mask here contains it (``tests/tabular/test_orion_model.py`` shows both).

Paper sizes (the released defaults) are :data:`PAPER_CONFIG`; the CPU configs use narrower models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import attend, block_sparse
from interplay.core.attention.banded import block_sparse_attention
from interplay.core.attention.rope import RotaryEmbedding
from interplay.core.errors import DataError
from interplay.core.nn import MultiHeadAttention

__all__ = [
    "BANDED_MIN_TOKENS",
    "PAPER_CONFIG",
    "ColumnEmbedding",
    "ICLTransformer",
    "MultiScaleRowInteraction",
    "OrionMSP",
    "OrionMSPConfig",
    "PerceiverMemory",
    "SparseRowBlock",
    "count_parameters",
]

# On CPU the gather path beats SDPA with a dense mask from about this many tokens per row
# (benchmarks/tabular/orion_msp.py: forward and forward + backward both break even near 500 tokens;
# below, SDPA's fused kernel wins).
BANDED_MIN_TOKENS = 512
ROW_ATTENTION_PATHS = ("auto", "banded", "masked")


@dataclass
class OrionMSPConfig:
    """Hyper-parameters of :class:`OrionMSP` (names follow the released code)."""

    max_classes: int = 10
    max_features: int = 100
    embed_dim: int = 128
    col_num_blocks: int = 3
    col_nhead: int = 4
    col_num_inds: int = 128
    row_num_blocks: int = 6
    row_nhead: int = 8
    row_num_cls: int = 4
    row_num_global: int = 2
    row_scales: tuple[int, ...] = (1, 4, 16)
    row_window: int = 4
    row_num_random: int = 2
    row_rope_base: float = 100_000.0
    perc_num_latents: int = 32
    perc_layers: int = 2
    icl_num_blocks: int = 12
    icl_nhead: int = 4
    ff_factor: int = 2
    dropout: float = 0.0
    standardize: bool = True
    row_attention: str = "auto"

    def __post_init__(self) -> None:
        self.row_scales = tuple(int(s) for s in self.row_scales)
        checks = {
            "max_classes": self.max_classes >= 2,
            "max_features": self.max_features >= 1,
            "embed_dim": self.embed_dim >= 2,
            "col_num_blocks": self.col_num_blocks >= 0,
            "col_num_inds": self.col_num_inds >= 1,
            "row_num_blocks": self.row_num_blocks >= 1,
            "row_num_cls": self.row_num_cls >= 1,
            "row_num_global": self.row_num_global >= 0,
            "row_scales": len(self.row_scales) > 0 and min(self.row_scales) >= 1,
            "row_window": self.row_window >= 0,
            "row_num_random": self.row_num_random >= 0,
            "perc_num_latents": self.perc_num_latents >= 0,
            "perc_layers": self.perc_layers >= 0,
            "icl_num_blocks": self.icl_num_blocks >= 1,
            "ff_factor": self.ff_factor >= 1,
            "dropout": 0.0 <= self.dropout < 1.0,
            "row_attention": self.row_attention in ROW_ATTENTION_PATHS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid OrionMSP setting(s): {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}"
            )
        for heads_name in ("col_nhead", "row_nhead"):
            heads = getattr(self, heads_name)
            if heads < 1 or self.embed_dim % heads:
                raise ValueError(f"{heads_name}={heads} must divide embed_dim={self.embed_dim}")
        if (self.embed_dim // self.row_nhead) % 2:
            raise ValueError(
                f"row head dim embed_dim / row_nhead = {self.embed_dim // self.row_nhead} must be even (RoPE)"
            )
        if self.icl_nhead < 1 or self.icl_dim % self.icl_nhead:
            raise ValueError(f"icl_nhead={self.icl_nhead} must divide the row embedding width {self.icl_dim}")

    @property
    def icl_dim(self) -> int:
        """Width of a row embedding: the CLS outputs concatenated."""
        return self.row_num_cls * self.embed_dim

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["row_scales"] = list(self.row_scales)
        return out


# released defaults (Orion-MSP README / paper): d = 128, 3 ISAB blocks with 128 inducing points, 4 CLS,
# scales (1, 4, 16), 32 latents x 2 Perceiver layers, 12 ICL blocks. The paper's text gives the
# block-sparse pattern as 2 global tokens and window 4 (the released defaults: 4 and 8).
PAPER_CONFIG = OrionMSPConfig()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class FeedForwardBlock(nn.Module):
    def __init__(self, dim: int, ff_factor: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Linear(dim, ff_factor * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_factor * dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(self.norm(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm multi-head attention block (MAB of Set Transformer): ``q + Attn(LN q, LN ctx)`` then FFN."""

    def __init__(self, dim: int, heads: int, ff_factor: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.ff = FeedForwardBlock(dim, ff_factor, dropout)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_kv(context))
        return self.ff(x)


# -- 1. column-wise embedding ----------------------------------------------------------------------
class InducedSetAttentionBlock(nn.Module):
    """ISAB with training-only induction: ``H = MAB(I, X[:T])``, ``out = MAB(X, H)`` (TabICL)."""

    def __init__(self, dim: int, heads: int, num_inds: int, ff_factor: int, dropout: float) -> None:
        super().__init__()
        self.inducing_points = nn.Parameter(torch.randn(num_inds, dim) * dim**-0.5)
        self.write = CrossAttentionBlock(dim, heads, ff_factor, dropout)
        self.read = CrossAttentionBlock(dim, heads, ff_factor, dropout)

    def forward(self, x: Tensor, train_size: int) -> Tensor:
        inducing = self.inducing_points.expand(x.shape[0], -1, -1)
        summary = self.write(inducing, x[:, :train_size])
        return self.read(x, summary)


class ColumnEmbedding(nn.Module):
    """``x [B, n, F] -> e [B, n, F, d]``: per-column ISABs, then ``e = x * W(h) + b(h)`` (TabICL)."""

    def __init__(self, dim: int, blocks: int, heads: int, num_inds: int, ff_factor: int, dropout: float):
        super().__init__()
        self.value_proj = nn.Linear(1, dim)
        self.blocks = nn.ModuleList(
            InducedSetAttentionBlock(dim, heads, num_inds, ff_factor, dropout) for _ in range(blocks)
        )
        self.weight_head = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.bias_head = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))

    def forward(self, x: Tensor, train_size: int) -> Tensor:
        batch, rows, features = x.shape
        columns = x.transpose(1, 2).reshape(batch * features, rows, 1)
        h = self.value_proj(columns)
        for block in self.blocks:
            h = block(h, train_size)
        cells = columns * self.weight_head(h) + self.bias_head(h)
        return cells.view(batch, features, rows, -1).transpose(1, 2)


# -- 2. multi-scale sparse row interaction ---------------------------------------------------------
class SparseRowBlock(nn.Module):
    """Pre-norm encoder block whose self-attention uses RoPE and the block-sparse pattern.

    ``path``: ``masked`` = :func:`attend` with the :func:`block_sparse` mask spec (flex on CUDA, SDPA on
    CPU); ``banded`` = the exact gather path; ``auto`` = banded on CPU from :data:`BANDED_MIN_TOKENS`
    tokens, masked otherwise.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ff_factor: int,
        dropout: float,
        *,
        n_global: int,
        window: int,
        n_random: int,
        seed: int,
        rope_base: float,
        path: str = "auto",
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.n_global, self.window, self.n_random, self.seed = n_global, window, n_random, seed
        self.path = path
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rope = RotaryEmbedding(self.head_dim, base=rope_base)
        self.ff = FeedForwardBlock(dim, ff_factor, dropout)

    def uses_banded(self, length: int, device: torch.device) -> bool:
        if self.path != "auto":
            return self.path == "banded"
        return device.type == "cpu" and length >= BANDED_MIN_TOKENS

    def forward(self, x: Tensor) -> Tensor:
        rows, length, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(rows, length, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [rows, heads, L, head_dim]
        q, k = self.rope(q), self.rope(k)
        if self.uses_banded(length, x.device):
            attended = block_sparse_attention(
                q, k, v, n_global=self.n_global, window=self.window, n_random=self.n_random, seed=self.seed
            )
        else:
            # the spec is rebuilt per call (cheap; attend's caches key on its parameters) so that the
            # module holds no closure and pickles
            mask = block_sparse(self.n_global, self.window, self.n_random, self.seed)
            attended = attend(q, k, v, mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(
            self.out(attended.transpose(1, 2).reshape(rows, length, dim)), self.dropout, self.training
        )
        return self.ff(x)


def group_features(cells: Tensor, scale: int) -> Tensor:
    """Mean of each group of ``scale`` consecutive feature tokens: ``[R, F, d] -> [R, ceil(F / s), d]``
    (the last group averages the features it has)."""
    if scale == 1:
        return cells
    rows, features, dim = cells.shape
    groups = -(-features // scale)
    pad = groups * scale - features
    summed = F.pad(cells, (0, 0, 0, pad)).view(rows, groups, scale, dim).sum(2)
    counts = torch.full((groups,), float(scale), device=cells.device, dtype=cells.dtype)
    counts[-1] = scale - pad
    return summed / counts[:, None]


class ScaleEncoder(nn.Module):
    """One scale: ``[CLS x c | GLOBAL x g | feature groups]`` through its own sparse encoder stack."""

    def __init__(self, cfg: OrionMSPConfig, scale: int, seed: int) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.scale = scale
        self.num_cls = cfg.row_num_cls
        self.cls_tokens = nn.Parameter(torch.randn(cfg.row_num_cls, dim) * 0.02)
        self.global_tokens = nn.Parameter(torch.randn(cfg.row_num_global, dim) * 0.02)
        self.blocks = nn.ModuleList(
            SparseRowBlock(
                dim,
                cfg.row_nhead,
                cfg.ff_factor,
                cfg.dropout,
                n_global=cfg.row_num_cls + cfg.row_num_global,
                window=cfg.row_window,
                n_random=cfg.row_num_random,
                seed=seed,
                rope_base=cfg.row_rope_base,
                path=cfg.row_attention,
            )
            for _ in range(cfg.row_num_blocks)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, cells: Tensor) -> Tensor:
        rows = cells.shape[0]
        tokens = torch.cat(
            [
                self.cls_tokens.expand(rows, -1, -1),
                self.global_tokens.expand(rows, -1, -1),
                group_features(cells, self.scale),
            ],
            dim=1,
        )
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, : self.num_cls])


class MultiScaleRowInteraction(nn.Module):
    """``e [B, n, F, d] -> r [B, n, c * d]``: CLS outputs of every scale, averaged, concatenated."""

    def __init__(self, cfg: OrionMSPConfig) -> None:
        super().__init__()
        # each scale has its own (fixed) random links: seed = scale index
        self.scales = nn.ModuleList(ScaleEncoder(cfg, s, seed=i) for i, s in enumerate(cfg.row_scales))

    def forward(self, cells: Tensor) -> Tensor:
        batch, rows, features, dim = cells.shape
        flat = cells.reshape(batch * rows, features, dim)
        cls = torch.stack([scale(flat) for scale in self.scales]).mean(0)
        return cls.reshape(batch, rows, -1)


# -- 3. Perceiver memory ---------------------------------------------------------------------------
class PerceiverMemory(nn.Module):
    """Latent slots written by the training rows (cross- then self-attention), read by every row."""

    def __init__(self, dim: int, num_latents: int, layers: int, heads: int, ff_factor: int, dropout: float):
        super().__init__()
        self.num_latents = num_latents
        if num_latents == 0:
            return
        # unit-scale latents (as Perceiver implementations, e.g. lucidrains' perceiver-pytorch): with
        # 0.02-scale latents every slot's residual is swamped by the same near-uniform average of the
        # training rows, the slots collapse onto one vector, the read returns the same vector to
        # every row whatever its content, and pre-training sits on a majority-class plateau
        # (docs/reproductions/orion-msp.md, "Diagnosis"; tests/tabular/test_orion_model.py)
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.write = nn.ModuleList(CrossAttentionBlock(dim, heads, ff_factor, dropout) for _ in range(layers))
        self.mix = nn.ModuleList(CrossAttentionBlock(dim, heads, ff_factor, dropout) for _ in range(layers))
        self.read = CrossAttentionBlock(dim, heads, ff_factor, dropout)

    def memory(self, rows: Tensor, train_size: int) -> Tensor:
        """``[B, M, D]`` latents after reading the first ``train_size`` rows (and nothing else)."""
        latents = self.latents.expand(rows.shape[0], -1, -1)
        context = rows[:, :train_size]
        for write, mix in zip(self.write, self.mix):
            latents = write(latents, context)
            latents = mix(latents, latents)
        return latents

    def forward(self, rows: Tensor, train_size: int) -> Tensor:
        if self.num_latents == 0:
            return rows
        return self.read(rows, self.memory(rows, train_size))


# -- 4. ICL transformer ----------------------------------------------------------------------------
class TrainContextBlock(nn.Module):
    """Pre-norm block where every row attends to the training rows only (TabICL's split attention)."""

    def __init__(self, dim: int, heads: int, ff_factor: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.ff = FeedForwardBlock(dim, ff_factor, dropout)

    def forward(self, x: Tensor, train_size: int) -> Tensor:
        h = self.norm(x)
        # keys and values: the training rows; equal to self-attention with keys >= T masked
        x = x + self.attn(h, h[:, :train_size])
        return self.ff(x)


class ICLTransformer(nn.Module):
    """Label injection on the training rows, train-only attention, classification head."""

    def __init__(self, dim: int, blocks: int, heads: int, max_classes: int, ff_factor: int, dropout: float):
        super().__init__()
        self.label_embedding = nn.Embedding(max_classes, dim)
        self.blocks = nn.ModuleList(TrainContextBlock(dim, heads, ff_factor, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, max_classes))

    def inject_labels(self, rows: Tensor, y_train: Tensor) -> Tensor:
        train_size = y_train.shape[1]
        labelled = rows[:, :train_size] + self.label_embedding(y_train)
        return torch.cat([labelled, rows[:, train_size:]], dim=1)

    def forward(self, rows: Tensor, y_train: Tensor) -> Tensor:
        train_size = y_train.shape[1]
        x = self.inject_labels(rows, y_train)
        for block in self.blocks:
            x = block(x, train_size)
        return self.head(self.norm(x[:, train_size:]))


# -- the model -------------------------------------------------------------------------------------
class OrionMSP(nn.Module):
    """Orion-MSP (see the module docstring).

    ``forward(x [B, n, F], y_train [B, T], n_classes=None) -> logits [B, n - T, max_classes]``: the first
    ``T`` rows of each table are the context (labels ``y_train`` in ``0 .. max_classes - 1``), the other
    ``n - T`` rows are predicted. ``n_classes`` (int or ``[B]``) masks the logits of absent classes.
    Features are standardised with the training rows' mean and standard deviation (``standardize``).
    """

    def __init__(self, config: OrionMSPConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = OrionMSPConfig(**overrides)
        elif overrides:
            config = OrionMSPConfig(**{**config.to_dict(), **overrides})
        self.config = cfg = config
        self.column_embedding = ColumnEmbedding(
            cfg.embed_dim, cfg.col_num_blocks, cfg.col_nhead, cfg.col_num_inds, cfg.ff_factor, cfg.dropout
        )
        self.row_interaction = MultiScaleRowInteraction(cfg)
        self.memory = PerceiverMemory(
            cfg.icl_dim, cfg.perc_num_latents, cfg.perc_layers, cfg.icl_nhead, cfg.ff_factor, cfg.dropout
        )
        self.icl = ICLTransformer(
            cfg.icl_dim, cfg.icl_num_blocks, cfg.icl_nhead, cfg.max_classes, cfg.ff_factor, cfg.dropout
        )

    @property
    def max_classes(self) -> int:
        return self.config.max_classes

    def check_inputs(self, x: Tensor, y_train: Tensor) -> None:
        """DataError naming the input when shapes, values or sizes are not usable."""
        if x.dim() != 3:
            raise DataError(f"OrionMSP: x must be [tables, rows, features], got shape {tuple(x.shape)}")
        if y_train.dim() != 2 or y_train.shape[0] != x.shape[0]:
            raise DataError(
                f"OrionMSP: y_train must be [tables, train rows] = [{x.shape[0]}, T], "
                f"got {tuple(y_train.shape)}"
            )
        train_size = y_train.shape[1]
        if not 1 <= train_size <= x.shape[1]:
            raise DataError(f"OrionMSP: need 1 <= train rows ({train_size}) <= rows ({x.shape[1]})")
        if x.shape[2] < 1:
            raise DataError("OrionMSP: x has no features")
        if x.shape[2] > self.config.max_features:
            raise DataError(
                f"OrionMSP: x has {x.shape[2]} features, more than max_features={self.config.max_features} "
                "the model was built for; select or project features first (e.g. SelectKBest, PCA) or "
                "use a checkpoint built with a larger max_features"
            )
        if not torch.is_floating_point(x):
            raise DataError(f"OrionMSP: x must be floating point, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise DataError(
                "OrionMSP: x has NaN or infinite values; impute them first (OrionMSPClassifier does)"
            )
        if y_train.dtype not in (torch.int64, torch.int32):
            raise DataError(f"OrionMSP: y_train must hold integer class indices, got {y_train.dtype}")
        if y_train.numel() and (int(y_train.min()) < 0 or int(y_train.max()) >= self.max_classes):
            raise DataError(
                f"OrionMSP: y_train values must be class indices in 0..{self.max_classes - 1}, got "
                f"{int(y_train.min())}..{int(y_train.max())} (more than max_classes classes?)"
            )

    @staticmethod
    def standardize(x: Tensor, train_size: int) -> Tensor:
        """``(x - mean) / std`` per table and column with the training rows' statistics."""
        train = x[:, :train_size]
        mean = train.mean(1, keepdim=True)
        std = train.std(1, keepdim=True, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant columns stay 0
        return (x - mean) / std

    def row_embeddings(self, x: Tensor, train_size: int) -> Tensor:
        """``[B, n, c * d]`` row embeddings after the memory read (stages 1-3)."""
        if self.config.standardize:
            x = self.standardize(x, train_size)
        cells = self.column_embedding(x, train_size)
        rows = self.row_interaction(cells)
        return self.memory(rows, train_size)

    def forward(self, x: Tensor, y_train: Tensor, n_classes: int | Tensor | None = None) -> Tensor:
        self.check_inputs(x, y_train)
        x = x.to(self.column_embedding.value_proj.weight.dtype)  # float64 tables on a float32 model
        y_train = y_train.long()
        rows = self.row_embeddings(x, y_train.shape[1])
        logits = self.icl(rows, y_train)
        if n_classes is not None:
            classes = torch.arange(self.max_classes, device=logits.device)
            limit = torch.as_tensor(n_classes, device=logits.device).reshape(-1, 1, 1)
            logits = logits.masked_fill(classes >= limit, float("-inf"))
        return logits
