"""PLM architectures for protein-protein binding affinity: EC, SC, HP and PAD with ConvBERT heads.

Alsamkary et al., "Beyond Simple Concatenation: Fairly Assessing PLM Architectures for Multi-Chain
Protein-Protein Interactions Prediction" (arXiv:2505.20036, 2025), Figure 1, checked against the
authors' code (github.com/Proteinea/ppiseq, ``ppiseq/models/convbert/*``). With per-residue
features ``E = PLM(chain)`` (``[L, D]``), a ConvBERT layer ``C`` (:class:`ConvBertLayer`, shared by
both sides), attention pooling ``P(X) = softmax(X w) X`` over valid residues
(:class:`AttentionPool`) and ``F`` = Linear -> SiLU -> Linear:

* EC, embeddings concatenation: ``y = MLP(P(C([E_lig ; E_rec])))`` -- residues of all chains of both
  sides concatenated, one pool, MLP ``D -> D -> 1`` (``concat_first=False``: ``MLP([P(C(E_lig)) ;
  P(C(E_rec))])`` instead).
* SC, sequences concatenation: ``y = w^T P(C(PLM(lig_1 SEP ... SEP rec_n)))`` -- ONE PLM pass over
  the joined chains (:meth:`EmbeddingProvider.embed_joint`), pool, linear.
* HP, hierarchical pooling: per chain ``h_c = P_side(C(E_c))``; per side ``H = P'_side(h_1..h_k)``
  (attention over chains); ``y = w^T F([H_lig ; H_rec])`` with ``F`` over ``2D`` (no biases, as the
  authors' ``bias: false``).
* PAD, pooled attention addition: ``L = C(E_lig)``, ``R = C(E_rec)``; ``L' = L + MHA(L, R, R)``,
  ``R' = R + MHA(R, L, L)`` (one shared 8-head cross-attention without q/k/v biases, each side
  masked by the other's padding); ``y = w^T F(P(L') + P(R'))``.

Ligand and receptor residues of EC and PAD are the concatenation of each side's per-chain
embeddings (the authors instead run the PLM once per side over ``chain SEP chain``; a per-chain
store is what lets one cached embedding serve every architecture). The output layer is initialised
as the authors' (weights U(-0.1, 0.1)) but its bias starts at the training mean pKd
(``target_mean``, filled from the data) instead of 0, which only shortens the first epoch.

Modes: frozen (default) reads features from an :class:`EmbeddingStore` (computed once, cached);
``finetune=True`` registers the provider's network as ``self.plm`` and trains it with the head
(random PLM or ESM-2). ``convbert=False`` drops the ConvBERT layer (the authors' fine-tuning
variants have none).

Padding never changes an output: features of padded positions are zeroed before every
convolution, attention uses key-padding masks through :func:`interplay.core.attention.attend`,
and pooling gives padding zero weight (tests check both).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.bio.ppi.embeddings import EmbeddingProvider, EmbeddingStore, create_provider
from interplay.bio.registry import REGISTRY
from interplay.core.attention import attend
from interplay.core.data import data_root
from interplay.core.errors import ConfigError
from interplay.core.nn import MultiHeadAttention

__all__ = [
    "ARCHITECTURES",
    "AttentionPool",
    "ConvBertLayer",
    "EmbeddingConcatenation",
    "HierarchicalPooling",
    "PPIModel",
    "PooledAttentionAddition",
    "SequenceConcatenation",
    "pad_residues",
]


def pad_residues(tensors: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``[N, L_max, D]`` zero-padded features and the ``[N, L_max]`` mask (True = residue)."""
    lengths = torch.tensor([t.shape[0] for t in tensors])
    x = nn.utils.rnn.pad_sequence(list(tensors), batch_first=True)
    mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return x, mask.to(x.device)


# ----------------------------------------------------------------------------------- layers
class AttentionPool(nn.Module):
    """``sum_i softmax_i(x_i . w) x_i`` over valid positions (the authors' AttentionPooling1D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)

    def weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """``[N, L]`` weights: zero on padding, summing to 1 over each row's valid positions."""
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row without residues pools to 0

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return torch.einsum("nl,nld->nd", self.weights(x, mask), x.masked_fill(~mask[..., None], 0.0))


class MeanPool(nn.Module):
    """Mean over valid positions (the authors' ``avg`` pooler)."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[..., None].to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


_POOLS = {"attention": AttentionPool, "mean": MeanPool}


def make_pool(kind: str, dim: int) -> nn.Module:
    if kind not in _POOLS:
        raise ConfigError(f"unknown pooling {kind!r} (choose from {', '.join(_POOLS)})")
    return _POOLS[kind](dim)


class ConvBertLayer(nn.Module):
    """One ConvBERT layer (Jiang et al., NeurIPS 2020) as Hugging Face's ``ConvBertLayer``.

    Mixed attention: ``heads / head_ratio`` self-attention heads of width ``dim / heads`` side by
    side with as many span-based dynamic convolution heads. For each position the convolution
    kernel (``kernel_size`` taps, softmax-normalised, one per head) is predicted from
    ``query * SeparableConv(x)`` (the span-aware key) and applied to a span of ``Linear(x)`` around
    the position (Eq. 3-4 of the ConvBERT paper). The two groups of heads are concatenated back to
    ``dim``, then ``LayerNorm(x + Dropout(Linear(.)))``, then the feed-forward block
    ``LayerNorm(h + Dropout(Linear(GELU(Linear(h)))))`` with ``intermediate`` hidden units.

    The only departure: padded positions are zeroed before both convolutions (so a convolution sees
    padding exactly as the zero padding at a sequence end) and in the output; Hugging Face's layer
    convolves over whatever features the padding holds.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        intermediate: int | None = None,
        kernel_size: int = 7,
        dropout: float = 0.2,
        attn_dropout: float = 0.1,
        head_ratio: int = 2,
    ) -> None:
        super().__init__()
        if dim % heads or heads % head_ratio:
            raise ConfigError(f"ConvBERT: dim ({dim}) must divide by heads ({heads}), heads by head_ratio")
        if kernel_size % 2 == 0:
            raise ConfigError(f"ConvBERT: kernel_size must be odd, got {kernel_size}")
        self.attn_heads = heads // head_ratio
        self.head_dim = dim // heads
        inner = self.attn_heads * self.head_dim
        self.kernel_size, self.attn_dropout = kernel_size, attn_dropout
        self.query, self.key, self.value = (nn.Linear(dim, inner) for _ in range(3))
        self.key_depthwise = nn.Conv1d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
        )
        self.key_pointwise = nn.Conv1d(dim, inner, 1, bias=False)
        self.key_conv_bias = nn.Parameter(torch.zeros(inner))
        self.conv_kernel = nn.Linear(inner, self.attn_heads * kernel_size)
        self.conv_out = nn.Linear(dim, inner)
        self.attn_output = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        intermediate = intermediate or dim // 2
        self.ffn_in = nn.Linear(dim, intermediate)
        self.ffn_out = nn.Linear(intermediate, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, dim = x.shape
        heads, width, k = self.attn_heads, self.head_dim, self.kernel_size
        valid = mask[..., None].to(x.dtype)
        x = x * valid
        q, key, value = self.query(x), self.key(x), self.value(x)
        span_key = (
            self.key_pointwise(self.key_depthwise(x.transpose(1, 2))).transpose(1, 2) + self.key_conv_bias
        )
        taps = self.conv_kernel(span_key * q).view(b, n, heads, k).softmax(dim=-1)
        spans = F.pad(self.conv_out(x) * valid, (0, 0, k // 2, k // 2)).unfold(1, k, 1)  # [b, n, inner, k]
        conv = torch.einsum("bnhwk,bnhk->bnhw", spans.reshape(b, n, heads, width, k), taps)
        attention = attend(
            q.view(b, n, heads, width).transpose(1, 2),
            key.view(b, n, heads, width).transpose(1, 2),
            value.view(b, n, heads, width).transpose(1, 2),
            mask=mask[:, None, None, :],
            dropout_p=self.attn_dropout if self.training else 0.0,
        ).transpose(1, 2)
        mixed = torch.cat([attention, conv], dim=2).reshape(b, n, dim)
        h = self.attn_norm(x + self.dropout(self.attn_output(mixed)))
        out = self.ffn_norm(h + self.dropout(self.ffn_out(F.gelu(self.ffn_in(h)))))
        return out * valid


def _mlp(dim: int, hidden: int, out: int, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.SiLU(), nn.Linear(hidden, out, bias=bias))


# ------------------------------------------------------------------------------------ models
class PPIModel(nn.Module):
    """Shared plumbing: features from a provider (frozen store or fine-tuned network), ConvBERT.

    ``forward(batch)`` takes the data module's batch (``ligand`` / ``receptor``: per complex a
    tuple of chain sequences) and returns pKd ``[B]``; ``encode(batch)`` builds the architecture's
    padded inputs and ``forward_head(inputs)`` maps them to pKd, so benchmarks can time the head on
    cached features alone.
    """

    def __init__(
        self,
        provider: EmbeddingProvider,
        *,
        finetune: bool = False,
        cache_dir: str | Path | None = None,
        convbert: bool = True,
        heads: int = 8,
        kernel_size: int = 7,
        dropout: float = 0.2,
        attn_dropout: float = 0.1,
        target_mean: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = provider.dim
        self.finetune = finetune
        if finetune:
            network = getattr(provider, "module", None)
            if not isinstance(network, nn.Module):
                raise ConfigError(
                    f"finetune=True needs a provider with a network to train, {provider.name} has none"
                )
            self.plm = network.requires_grad_(True)
            self.provider = provider
        else:
            if cache_dir == "auto":
                cache_dir = data_root() / "bio" / "ppi_embeddings"
            # a plain attribute: frozen features (and an ESM network) stay out of state_dict
            self.provider = EmbeddingStore(provider, cache_dir)
        self.convbert = (
            ConvBertLayer(self.dim, heads, self.dim // 2, kernel_size, dropout, attn_dropout)
            if convbert
            else None
        )
        self.target_mean = float(target_mean)

    def _init_output(self, layer: nn.Linear) -> None:
        nn.init.uniform_(layer.weight, -0.1, 0.1)
        nn.init.constant_(layer.bias, self.target_mean)

    def _device(self) -> torch.device:
        return next(p for p in self.parameters()).device

    def chain_features(self, sequences: Sequence[str]) -> dict[str, Tensor]:
        """Per-residue features of each distinct chain, on the model's device."""
        unique = list(dict.fromkeys(sequences))
        features = self.provider.embed(unique)
        device = self._device()
        return {s: f.to(device) for s, f in zip(unique, features)}

    def joint_features(self, batch: dict[str, Any]) -> list[Tensor]:
        device = self._device()
        pairs = list(zip(batch["ligand"], batch["receptor"]))
        return [f.to(device) for f in self.provider.embed_joint(pairs)]

    def contextualise(self, x: Tensor, mask: Tensor) -> Tensor:
        return x if self.convbert is None else self.convbert(x, mask)

    def encode(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward_head(self, inputs: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.forward_head(self.encode(batch))

    def side_features(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Each side's chains concatenated per complex, padded (EC and PAD)."""
        features = self.chain_features(
            [c for side in ("ligand", "receptor") for cx in batch[side] for c in cx]
        )
        out = {}
        for side in ("ligand", "receptor"):
            x, mask = pad_residues([torch.cat([features[c] for c in cx]) for cx in batch[side]])
            out[side], out[f"{side}_mask"] = x, mask
        return out


class EmbeddingConcatenation(PPIModel):
    """EC: ConvBERT over all residues of both sides concatenated, one attention pool, MLP."""

    def __init__(
        self, provider: EmbeddingProvider, *, concat_first: bool = True, pool: str = "attention", **common
    ):
        super().__init__(provider, **common)
        self.concat_first = concat_first
        self.pool = make_pool(pool, self.dim)
        width = self.dim if concat_first else 2 * self.dim
        self.head = _mlp(width, width, 1)
        self._init_output(self.head[-1])

    def encode(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if not self.concat_first:
            return self.side_features(batch)
        features = self.chain_features(
            [c for side in ("ligand", "receptor") for cx in batch[side] for c in cx]
        )
        joined = [
            torch.cat([features[c] for c in (*lig, *rec)])
            for lig, rec in zip(batch["ligand"], batch["receptor"])
        ]
        x, mask = pad_residues(joined)
        return {"residues": x, "mask": mask}

    def forward_head(self, inputs: dict[str, Tensor]) -> Tensor:
        if self.concat_first:
            pooled = self.pool(self.contextualise(inputs["residues"], inputs["mask"]), inputs["mask"])
        else:
            pooled = torch.cat(
                [
                    self.pool(self.contextualise(inputs[s], inputs[f"{s}_mask"]), inputs[f"{s}_mask"])
                    for s in ("ligand", "receptor")
                ],
                dim=-1,
            )
        return self.head(pooled).squeeze(-1)


class SequenceConcatenation(PPIModel):
    """SC: one PLM pass over ligand + separator + receptor chains, ConvBERT, pool, linear."""

    def __init__(self, provider: EmbeddingProvider, *, pool: str = "attention", **common):
        super().__init__(provider, **common)
        self.pool = make_pool(pool, self.dim)
        self.output = nn.Linear(self.dim, 1)
        self._init_output(self.output)

    def encode(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x, mask = pad_residues(self.joint_features(batch))
        return {"residues": x, "mask": mask}

    def forward_head(self, inputs: dict[str, Tensor]) -> Tensor:
        h = self.contextualise(inputs["residues"], inputs["mask"])
        return self.output(self.pool(h, inputs["mask"])).squeeze(-1)


class HierarchicalPooling(PPIModel):
    """HP: attention pooling per chain, then over each side's chains, [ligand ; receptor], FFN, linear."""

    def __init__(
        self,
        provider: EmbeddingProvider,
        *,
        pool: str = "attention",
        chain_pool: str = "attention",
        ffn: bool = True,
        **common,
    ):
        super().__init__(provider, **common)
        # separate (unshared) poolers per side, as the authors' shared_*_pooler: false
        self.residue_pools = nn.ModuleDict({s: make_pool(pool, self.dim) for s in ("ligand", "receptor")})
        self.chain_pools = nn.ModuleDict({s: make_pool(chain_pool, self.dim) for s in ("ligand", "receptor")})
        width = 2 * self.dim
        self.ffn = _mlp(width, width, width, bias=False) if ffn else None
        self.output = nn.Linear(width, 1)
        self._init_output(self.output)

    def encode(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        features = self.chain_features(
            [c for side in ("ligand", "receptor") for cx in batch[side] for c in cx]
        )
        out = {}
        for side in ("ligand", "receptor"):
            chains = [c for cx in batch[side] for c in cx]
            x, mask = pad_residues([features[c] for c in chains])
            owner = torch.repeat_interleave(torch.tensor([len(cx) for cx in batch[side]]))
            out[side], out[f"{side}_mask"], out[f"{side}_owner"] = x, mask, owner.to(x.device)
        return out

    def _side(self, inputs: dict[str, Tensor], side: str) -> Tensor:
        x, mask, owner = inputs[side], inputs[f"{side}_mask"], inputs[f"{side}_owner"]
        chains = self.residue_pools[side](self.contextualise(x, mask), mask)  # [n_chains, D]
        # lay each complex's chains out as a row so chain pooling is one masked softmax
        counts = torch.bincount(owner)
        slot = torch.arange(len(owner), device=owner.device) - (torch.cumsum(counts, 0) - counts)[owner]
        grid = chains.new_zeros(len(counts), int(counts.max()), self.dim)
        grid[owner, slot] = chains
        grid_mask = torch.zeros(grid.shape[:2], dtype=torch.bool, device=grid.device)
        grid_mask[owner, slot] = True
        return self.chain_pools[side](grid, grid_mask)

    def forward_head(self, inputs: dict[str, Tensor]) -> Tensor:
        h = torch.cat([self._side(inputs, "ligand"), self._side(inputs, "receptor")], dim=-1)
        if self.ffn is not None:
            h = self.ffn(h)
        return self.output(h).squeeze(-1)


class PooledAttentionAddition(PPIModel):
    """PAD: ConvBERT per side, bidirectional cross-attention with residual, pool each side, add, FFN."""

    def __init__(
        self,
        provider: EmbeddingProvider,
        *,
        pool: str = "attention",
        cross_heads: int = 8,
        ffn: bool = True,
        **common,
    ):
        super().__init__(provider, **common)
        self.cross_attention = MultiHeadAttention(self.dim, cross_heads, qkv_bias=False)
        self.pool = make_pool(pool, self.dim)
        self.ffn = _mlp(self.dim, self.dim, self.dim) if ffn else None
        self.output = nn.Linear(self.dim, 1)
        self._init_output(self.output)

    def encode(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.side_features(batch)

    def forward_head(self, inputs: dict[str, Tensor]) -> Tensor:
        lig_mask, rec_mask = inputs["ligand_mask"], inputs["receptor_mask"]
        lig = self.contextualise(inputs["ligand"], lig_mask)
        rec = self.contextualise(inputs["receptor"], rec_mask)
        lig_cross = self.cross_attention(lig, rec, key_padding_mask=rec_mask)
        rec_cross = self.cross_attention(rec, lig, key_padding_mask=lig_mask)
        pooled = self.pool(lig + lig_cross, lig_mask) + self.pool(rec + rec_cross, rec_mask)
        if self.ffn is not None:
            pooled = self.ffn(pooled)
        return self.output(pooled).squeeze(-1)


ARCHITECTURES = {
    "ec": EmbeddingConcatenation,
    "sc": SequenceConcatenation,
    "hp": HierarchicalPooling,
    "pad": PooledAttentionAddition,
}


# ------------------------------------------------------------------------------- registration
def _build(
    cls: type[PPIModel],
    plm: str,
    plm_params: dict[str, Any] | None,
    common: dict[str, Any],
    arch: dict[str, Any],
) -> PPIModel:
    provider = create_provider(plm, plm_params)
    return cls(provider, **common, **arch)


@REGISTRY.models.register(
    "ppi-ec", "PPI affinity, EC: concatenated residues of both sides, ConvBERT, pool, MLP"
)
def ppi_ec(
    plm: str = "random",
    plm_params: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    finetune: bool = False,
    convbert: bool = True,
    heads: int = 8,
    kernel_size: int = 7,
    dropout: float = 0.2,
    attn_dropout: float = 0.1,
    target_mean: float = 0.0,
    concat_first: bool = True,
    pool: str = "attention",
) -> EmbeddingConcatenation:
    common = dict(
        finetune=finetune,
        cache_dir=cache_dir,
        convbert=convbert,
        heads=heads,
        kernel_size=kernel_size,
        dropout=dropout,
        attn_dropout=attn_dropout,
        target_mean=target_mean,
    )
    return _build(EmbeddingConcatenation, plm, plm_params, common, dict(concat_first=concat_first, pool=pool))


@REGISTRY.models.register(
    "ppi-sc", "PPI affinity, SC: one PLM pass over ligand + SEP + receptor, ConvBERT, pool, linear"
)
def ppi_sc(
    plm: str = "random",
    plm_params: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    finetune: bool = False,
    convbert: bool = True,
    heads: int = 8,
    kernel_size: int = 7,
    dropout: float = 0.2,
    attn_dropout: float = 0.1,
    target_mean: float = 0.0,
    pool: str = "attention",
) -> SequenceConcatenation:
    common = dict(
        finetune=finetune,
        cache_dir=cache_dir,
        convbert=convbert,
        heads=heads,
        kernel_size=kernel_size,
        dropout=dropout,
        attn_dropout=attn_dropout,
        target_mean=target_mean,
    )
    return _build(SequenceConcatenation, plm, plm_params, common, dict(pool=pool))


@REGISTRY.models.register(
    "ppi-hp", "PPI affinity, HP: pool per chain, then over chains, [ligand ; receptor], FFN"
)
def ppi_hp(
    plm: str = "random",
    plm_params: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    finetune: bool = False,
    convbert: bool = True,
    heads: int = 8,
    kernel_size: int = 7,
    dropout: float = 0.2,
    attn_dropout: float = 0.1,
    target_mean: float = 0.0,
    pool: str = "attention",
    chain_pool: str = "attention",
    ffn: bool = True,
) -> HierarchicalPooling:
    common = dict(
        finetune=finetune,
        cache_dir=cache_dir,
        convbert=convbert,
        heads=heads,
        kernel_size=kernel_size,
        dropout=dropout,
        attn_dropout=attn_dropout,
        target_mean=target_mean,
    )
    return _build(
        HierarchicalPooling, plm, plm_params, common, dict(pool=pool, chain_pool=chain_pool, ffn=ffn)
    )


@REGISTRY.models.register(
    "ppi-pad", "PPI affinity, PAD: cross multi-head attention both ways, pool, add, FFN"
)
def ppi_pad(
    plm: str = "random",
    plm_params: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    finetune: bool = False,
    convbert: bool = True,
    heads: int = 8,
    kernel_size: int = 7,
    dropout: float = 0.2,
    attn_dropout: float = 0.1,
    target_mean: float = 0.0,
    pool: str = "attention",
    cross_heads: int = 8,
    ffn: bool = True,
) -> PooledAttentionAddition:
    common = dict(
        finetune=finetune,
        cache_dir=cache_dir,
        convbert=convbert,
        heads=heads,
        kernel_size=kernel_size,
        dropout=dropout,
        attn_dropout=attn_dropout,
        target_mean=target_mean,
    )
    return _build(
        PooledAttentionAddition, plm, plm_params, common, dict(pool=pool, cross_heads=cross_heads, ffn=ffn)
    )
