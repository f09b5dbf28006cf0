"""MOTCat: multimodal optimal-transport co-attention transformer for survival prediction.

Xu & Chen, "Multimodal Optimal Transport-based Co-Attention Transformer with Global Structure
Consistency for Survival Prediction", ICCV 2023 (official code: github.com/Innse/MOTCat,
``models/model_motcat.py``, which this module follows layer by layer where the paper is silent).

One patient = a bag of ``N`` whole-slide patch features ``X_p [N, 1024]`` and ``M = 6`` genomic
groups ``x_g^(k)`` (one vector per functional group of the signatures CSV).

* Encoders: ``H_p = Dropout(ReLU(W_p X_p))`` (``1024 -> 256``); one self-normalising network
  per group, ``h_g^(k) = SNN_k(x_g^(k))`` (MCAT's ``SNN_Block``: Linear + ELU + AlphaDropout, two
  blocks ``-> 256 -> 256``), stacked as ``H_g [M, 256]``.
* OT co-attention (Sec. 3.2, Eq. 2-5): both token sets are shifted by their row minimum (the
  official ``normalize_feature``), the cost is ``C_ij = ||h_p^i - h_g^j||^2 / max(C)`` (detached),
  and the plan ``P*`` solves the entropic unbalanced OT problem
  ``min_P <P, C> - eps H(P) + tau KL(P 1 | 1/N) + tau KL(P^T 1 | 1/M)`` (Eq. 3; ``eps = 0.05`` for
  BLCA / LUAD and ``0.1`` otherwise, ``tau = 0.5``), solved by
  :func:`interplay.core.attention.transport.ot_coattention` without gradient (as the official POT
  call on a detached cost). The co-attended path tokens are ``H_hat_p = P*^T H_p [M, 256]`` (Eq. 5).
* Mini-batch OT (Sec. 3.3, Eq. 6-7): for large bags the patches are shuffled into ``C`` chunks of
  at most ``m`` patches, OT is solved per chunk, and the co-attended tokens are averaged,
  ``H_hat_p = (1/C) sum_c P_c*^T H_p^(c)`` (the expectation of the mini-batch OT aggregation).
* Transformers and pooling (Sec. 3.4): a 2-layer post-norm transformer encoder (d 256, 8 heads,
  feed-forward 512, ReLU, dropout 0.25, as ``nn.TransformerEncoderLayer``) on each token set, then
  gated attention pooling (``Attn_Net_Gated``, Ilse et al. 2018 Eq. 9:
  ``a = w^T (tanh(V h) * sigmoid(U h))``, softmax over tokens) and ``rho = ReLU(Linear)``.
* Fusion and survival head: ``concat -> Linear(512, 256) -> ReLU -> Linear(256, 256) -> ReLU`` (or
  the gated bilinear fusion of Pathomic Fusion / MCAT), ``logits = W h``, hazards
  ``h_t = sigmoid(logit_t)``, survival ``S_t = prod_{s <= t} (1 - h_s)`` and risk ``-sum_t S_t``.

Deviations from the official code, each deliberate:

* Mini-batch OT averages the co-attended tokens *inside* one forward pass (the paper's Eq. 7). The
  official trainer (``trainer/mb_trainer.py``) instead runs the whole network once per chunk and
  averages the per-chunk losses and risks; it also makes ``N // m + 1`` chunks, i.e. two chunks
  when ``N == m``. Here a bag of ``N <= m`` patches is one chunk, so it equals the full OT path.
* At evaluation all patches are transported at once (``eval_micro_batch=None``; the core solver
  handles 10^5 patches in well under a second); ``eval_micro_batch=m`` uses chunks of the *same*
  rule in the bag's own order (no shuffle), so evaluation stays deterministic.
* The official OT call runs POT in float64 on the CPU for up to 1000 iterations; the torch solver
  here runs in the model's dtype on its device for ``ot_iters`` (100) iterations with early stopping,
  which reproduces POT's converged plans to ~1e-6 relative on MOTCat-like costs (see tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from interplay.bio.registry import REGISTRY
from interplay.core.attention.transport import OT_BACKENDS, OTCoAttention
from interplay.core.errors import ConfigError, DataError
from interplay.core.nn import FeedForward, MultiHeadAttention

__all__ = [
    "FUSIONS",
    "BilinearFusion",
    "GatedAttentionPooling",
    "MOTCat",
    "MultimodalCoAttentionSurvival",
    "PostNormEncoderLayer",
    "TokenTransformer",
    "init_max_weights",
    "micro_batch_chunks",
    "snn_block",
    "snn_encoder",
    "survival_outputs",
]

FUSIONS = ("concat", "bilinear")


# --------------------------------------------------------------------------------------------------
# building blocks (shared with the baselines in survival_baselines.py)


def snn_block(in_dim: int, out_dim: int, dropout: float = 0.25) -> nn.Sequential:
    """MCAT's ``SNN_Block``: Linear -> ELU -> AlphaDropout (Klambauer et al., 2017, self-normalising)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ELU(), nn.AlphaDropout(p=dropout))


def snn_encoder(in_dim: int, hidden: Sequence[int], dropout: float = 0.25) -> nn.Sequential:
    """A stack of :func:`snn_block` s ``in_dim -> hidden[0] -> ... -> hidden[-1]``."""
    dims = [in_dim, *hidden]
    return nn.Sequential(*(snn_block(dims[i], dims[i + 1], dropout) for i in range(len(hidden))))


def init_max_weights(module: nn.Module) -> None:
    """MCAT's SNN initialisation: ``W ~ N(0, 1 / fan_in)``, zero bias (LeCun normal, as SELU nets need)."""
    for layer in module.modules():
        if type(layer) is nn.Linear:
            nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.weight.size(1)))
            nn.init.zeros_(layer.bias)


def survival_outputs(logits: Tensor) -> dict[str, Tensor]:
    """Discrete-time survival head: hazards ``sigmoid(logits)``, ``S = cumprod(1 - h)``, risk ``-sum S``."""
    hazards = torch.sigmoid(logits)
    survival = torch.cumprod(1 - hazards, dim=-1)
    return {"logits": logits, "hazards": hazards, "survival": survival, "risk": -survival.sum(-1)}


class GatedAttentionPooling(nn.Module):
    """Gated attention pooling (Ilse et al., ICML 2018, Eq. 9; MCAT's ``Attn_Net_Gated``).

    ``a_k = w^T (tanh(V h_k) * sigmoid(U h_k))`` with dropout on both branches, ``alpha = softmax(a)``
    over the ``L`` tokens, pooled ``z = sum_k alpha_k h_k``.
    ``forward(tokens [B, L, dim]) -> (pooled [B, dim], weights [B, L])``.
    """

    def __init__(self, dim: int = 256, hidden: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(hidden, 1)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.attention_c(self.attention_a(tokens) * self.attention_b(tokens)).squeeze(-1)
        weights = torch.softmax(scores, dim=-1)
        return (weights.unsqueeze(-2) @ tokens).squeeze(-2), weights


class PostNormEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (post-norm, ReLU) on interplay's attention.

    ``x = LN(x + Dropout(MHA(x)))``, ``x = LN(x + FFN(x))`` with ``FFN = Linear -> ReLU -> Dropout ->
    Linear -> Dropout`` and dropout on the attention weights, as the official MOTCat / MCAT layers
    (``d_model=256, nhead=8, dim_feedforward=512, dropout=0.25``). Core's ``TransformerBlock`` is
    pre-norm with GELU, hence this layer.
    """

    def __init__(self, dim: int = 256, heads: int = 8, ff_dim: int = 512, dropout: float = 0.25) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ff_dim, dropout=dropout, activation=nn.ReLU)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ffn(x))


class TokenTransformer(nn.Sequential):
    """``layers`` :class:`PostNormEncoderLayer` s (``nn.TransformerEncoder`` without a final norm)."""

    def __init__(
        self, dim: int = 256, heads: int = 8, ff_dim: int = 512, dropout: float = 0.25, layers: int = 2
    ) -> None:
        super().__init__(*(PostNormEncoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers)))


class BilinearFusion(nn.Module):
    """Gated bilinear fusion (Chen et al., Pathomic Fusion, IEEE TMI 2020; MCAT's ``BilinearFusion``).

    Each modality is gated by the other, ``o_1 = ReLU(W_o (sigmoid(W_z [h_1, h_2]) * ReLU(W_h h_1)))``
    (reduced to ``dim // scale``), both get a constant 1 appended, and their outer product
    ``[o_1, 1] (x) [o_2, 1]`` goes through two ReLU layers to ``out_dim``. MOTCat's option
    ``fusion='bilinear'``: ``dim1 = dim2 = 256``, ``scale_dim1 = scale_dim2 = 8``, ``mmhid = 256``.
    """

    def __init__(self, dim: int = 256, scale: int = 8, out_dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        reduced = dim // scale
        self.linear_h1 = nn.Sequential(nn.Linear(dim, reduced), nn.ReLU())
        self.linear_z1 = nn.Linear(2 * dim, reduced)
        self.linear_o1 = nn.Sequential(nn.Linear(reduced, reduced), nn.ReLU(), nn.Dropout(dropout))
        self.linear_h2 = nn.Sequential(nn.Linear(dim, reduced), nn.ReLU())
        self.linear_z2 = nn.Linear(2 * dim, reduced)
        self.linear_o2 = nn.Sequential(nn.Linear(reduced, reduced), nn.ReLU(), nn.Dropout(dropout))
        self.post_fusion_dropout = nn.Dropout(dropout)
        self.encoder1 = nn.Sequential(nn.Linear((reduced + 1) ** 2, 256), nn.ReLU(), nn.Dropout(dropout))
        self.encoder2 = nn.Sequential(nn.Linear(256, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        both = torch.cat([first, second], dim=-1)
        o1 = self.linear_o1(torch.sigmoid(self.linear_z1(both)) * self.linear_h1(first))
        o2 = self.linear_o2(torch.sigmoid(self.linear_z2(both)) * self.linear_h2(second))
        o1 = F.pad(o1, (0, 1), value=1.0)
        o2 = F.pad(o2, (0, 1), value=1.0)
        outer = (o1.unsqueeze(-1) * o2.unsqueeze(-2)).flatten(-2)
        return self.encoder2(self.encoder1(self.post_fusion_dropout(outer)))


def micro_batch_chunks(
    n: int, micro_batch: int, *, shuffle: bool, device: torch.device | None = None
) -> list[Tensor]:
    """Patch indices split into ``ceil(n / micro_batch)`` near-equal chunks of at most ``micro_batch``.

    ``shuffle`` draws a random permutation first (MOTCat's ``split_chunk_list``; from torch's global
    generator, so ``seed_everything`` makes it reproducible); otherwise the chunks keep the bag order.
    """
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    return list(torch.tensor_split(order, math.ceil(n / micro_batch)))


# --------------------------------------------------------------------------------------------------
# input handling


def _case(item: Mapping[str, Any] | None) -> str:
    case_id = item.get("case_id") if item is not None else None
    if isinstance(case_id, (list, tuple)) and len(case_id) == 1:  # collated batch of one
        case_id = case_id[0]
    return f"case {case_id}: " if case_id is not None else ""


def unpack_item(
    item: Mapping[str, Any] | None, path: Tensor | None, omics: Any
) -> tuple[Tensor | None, Any, str]:
    """``(path, omics, error_prefix)`` from an item dict (``ITEM_KEYS``) or from keyword tensors."""
    if item is not None:
        if not isinstance(item, Mapping):
            raise DataError(
                f"the model takes an item dict (keys path, omics, ...) or path=/omics= tensors; "
                f"got {type(item).__name__}"
            )
        if path is not None or omics is not None:
            raise ConfigError("pass either an item dict or path=/omics= tensors, not both")
        return item.get("path"), item.get("omics"), _case(item)
    return path, omics, ""


def check_bag(path: Any, in_dim: int, prefix: str) -> Tensor:
    """One patient's patch bag as ``[N, in_dim]`` (a collated ``[1, N, in_dim]`` is accepted)."""
    if path is None:
        raise DataError(f"{prefix}the item has no 'path' (patch-feature bag); this model needs one")
    if not isinstance(path, Tensor):
        raise DataError(f"{prefix}'path' must be a tensor [N, {in_dim}]; got {type(path).__name__}")
    if path.ndim == 3:
        if path.shape[0] != 1:
            raise DataError(
                f"{prefix}'path' has a batch of {path.shape[0]} bags; bags differ in size, so this model "
                "takes one patient at a time (batch size 1, as MOTCat; accumulate gradients instead)"
            )
        path = path[0]
    if path.ndim != 2 or path.shape[-1] != in_dim:
        raise DataError(f"{prefix}'path' must have shape [N, {in_dim}]; got {tuple(path.shape)}")
    if path.shape[0] == 0:
        raise DataError(f"{prefix}'path' is an empty bag (0 patches); the slide has no patch features")
    if not path.is_floating_point():
        raise DataError(f"{prefix}'path' must be floating point; got {path.dtype}")
    return path


def check_finite(tensor: Tensor, field: str, prefix: str) -> None:
    if not bool(torch.isfinite(tensor).all()):
        what = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
        raise DataError(f"{prefix}'{field}' contains {what} values")


def check_omic_groups(omics: Any, sizes: Sequence[int], prefix: str) -> list[Tensor]:
    """The genomic groups as 1-D tensors of the configured sizes (``[1, size]`` rows are accepted)."""
    if omics is None:
        raise DataError(f"{prefix}the item has no 'omics'; this model needs {len(sizes)} genomic groups")
    if isinstance(omics, Tensor) or not isinstance(omics, Sequence):
        raise DataError(
            f"{prefix}'omics' must be a list of {len(sizes)} tensors (one per genomic group); "
            f"got {type(omics).__name__}"
        )
    if len(omics) != len(sizes):
        raise DataError(f"{prefix}'omics' has {len(omics)} groups; the model was built for {len(sizes)}")
    groups = []
    for index, (group, size) in enumerate(zip(omics, sizes)):
        if not isinstance(group, Tensor):
            raise DataError(f"{prefix}'omics[{index}]' must be a tensor; got {type(group).__name__}")
        if group.ndim == 2 and group.shape[0] == 1:
            group = group[0]
        if group.ndim != 1 or group.shape[0] != size:
            raise DataError(
                f"{prefix}'omics[{index}]' must be a vector of {size} features (omic_sizes[{index}]); "
                f"got shape {tuple(group.shape)}"
            )
        check_finite(group, f"omics[{index}]", prefix)
        groups.append(group)  # cast to the weights' dtype by the caller
    return groups


def _check_omic_sizes(omic_sizes: Any) -> tuple[int, ...]:
    if isinstance(omic_sizes, (str, bytes)) or not isinstance(omic_sizes, Sequence) or not omic_sizes:
        raise ConfigError(f"omic_sizes must be a non-empty list of group sizes; got {omic_sizes!r}")
    sizes = tuple(omic_sizes)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ConfigError(f"omic_sizes must be positive integers; got {list(sizes)}")
    return sizes


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1); got {dropout}")


# --------------------------------------------------------------------------------------------------
# shared multimodal co-attention model


class MultimodalCoAttentionSurvival(nn.Module):
    """Path bag + genomic groups -> co-attention -> two transformers -> pooling -> fusion -> hazards.

    The skeleton shared by MOTCat and MCAT (Chen et al., ICCV 2021); subclasses provide
    :meth:`coattend` (genomic-guided aggregation of the path tokens into ``M`` tokens).

    ``forward(item)`` or ``forward(path=..., omics=...)`` returns a dict with ``logits``,
    ``hazards``, ``survival`` (``[1, n_bins]``), ``risk`` (``[1]``), ``path_attention`` and
    ``omic_attention`` (the pooling weights over the ``M`` co-attended / genomic tokens, ``[1, M]``)
    plus whatever :meth:`coattend` reports (MOTCat's transport ``plan [N, M]``).
    """

    def __init__(
        self,
        omic_sizes: Sequence[int],
        *,
        n_bins: int = 4,
        fusion: str = "concat",
        dropout: float = 0.25,
        path_input_dim: int = 1024,
        dim: int = 256,
        heads: int = 8,
        ff_dim: int = 512,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.omic_sizes = _check_omic_sizes(omic_sizes)
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}; got {fusion!r}")
        if n_bins < 1:
            raise ConfigError(f"n_bins must be >= 1; got {n_bins}")
        if dim % heads:
            raise ConfigError(f"dim={dim} must be divisible by heads={heads}")
        _check_dropout(dropout)
        self.n_bins, self.fusion, self.path_input_dim, self.dim = n_bins, fusion, path_input_dim, dim
        # the official wsi_net and SNNs use a fixed 0.25; the paper's setting has dropout = 0.25 too
        self.path_encoder = nn.Sequential(nn.Linear(path_input_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.omic_encoders = nn.ModuleList(snn_encoder(size, (dim, dim), dropout) for size in self.omic_sizes)
        self.path_transformer = TokenTransformer(dim, heads, ff_dim, dropout, layers)
        self.path_pooling = GatedAttentionPooling(dim, dim, dropout)
        self.path_rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.omic_transformer = TokenTransformer(dim, heads, ff_dim, dropout, layers)
        self.omic_pooling = GatedAttentionPooling(dim, dim, dropout)
        self.omic_rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        if fusion == "concat":
            self.fusion_layer: nn.Module = nn.Sequential(
                nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU()
            )
        else:
            self.fusion_layer = BilinearFusion(dim, 8, dim, dropout)
        self.classifier = nn.Linear(dim, n_bins)

    def coattend(self, path_tokens: Tensor, omic_tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(co-attended path tokens [M, dim], extra outputs)`` from ``H_p [N, dim]``, ``H_g [M, dim]``."""
        raise NotImplementedError

    def encode(self, item=None, *, path=None, omics=None) -> tuple[Tensor, Tensor, str]:
        """Validated inputs through the modality encoders: ``(H_p [N, dim], H_g [M, dim], prefix)``."""
        path, omics, prefix = unpack_item(item, path, omics)
        dtype = self.classifier.weight.dtype  # float64 tables and float16 bags meet float32 weights
        bag = check_bag(path, self.path_input_dim, prefix).to(dtype)
        groups = [group.to(dtype) for group in check_omic_groups(omics, self.omic_sizes, prefix)]
        path_tokens = self.path_encoder(bag)
        # a sum is one cheap pass and is non-finite iff some token is; only then scan the raw bag
        if not bool(torch.isfinite(path_tokens.detach().sum())):
            check_finite(bag, "path", prefix)
        omic_tokens = torch.stack([encoder(group) for encoder, group in zip(self.omic_encoders, groups)])
        return path_tokens, omic_tokens, prefix

    def forward(
        self, item: Mapping[str, Any] | None = None, *, path: Tensor | None = None, omics: Any = None
    ) -> dict[str, Tensor]:
        path_tokens, omic_tokens, _ = self.encode(item, path=path, omics=omics)
        coattended, extra = self.coattend(path_tokens, omic_tokens)
        path_repr, path_weights = self.path_pooling(self.path_transformer(coattended.unsqueeze(0)))
        omic_repr, omic_weights = self.omic_pooling(self.omic_transformer(omic_tokens.unsqueeze(0)))
        path_repr, omic_repr = self.path_rho(path_repr), self.omic_rho(omic_repr)
        if self.fusion == "concat":
            fused = self.fusion_layer(torch.cat([path_repr, omic_repr], dim=-1))
        else:
            fused = self.fusion_layer(path_repr, omic_repr)
        outputs = survival_outputs(self.classifier(fused))
        outputs.update(extra, path_attention=path_weights, omic_attention=omic_weights)
        return outputs


# --------------------------------------------------------------------------------------------------
# MOTCat


@REGISTRY.models.register(
    "motcat",
    "MOTCat: optimal-transport co-attention of WSI patches and genomic groups for survival (Xu & Chen, 2023)",
)
class MOTCat(MultimodalCoAttentionSurvival):
    """MOTCat (Xu & Chen, ICCV 2023); see the module docstring for the equations.

    Args:
        omic_sizes: features per genomic group (six groups for the TCGA signatures).
        n_bins: discrete survival bins (4: quartiles of uncensored survival times).
        fusion: ``"concat"`` (paper) or ``"bilinear"``.
        dropout: dropout of every layer (0.25).
        ot_reg: entropic regularisation ``eps`` (0.05 BLCA / LUAD, 0.1 BRCA / UCEC / GBMLGG).
        ot_tau: marginal relaxation ``tau`` of unbalanced OT (0.5); ``None`` solves balanced OT.
        ot_iters: maximum Sinkhorn iterations (early-stopped).
        ot_backend: ``"torch"`` (core's batched solver) or ``"pot"`` (POT, the reference).
        ot_micro_batch: training chunk size ``m`` of mini-batch OT; ``None`` transports the whole bag.
        eval_micro_batch: the same at evaluation (chunks in bag order); ``None`` (default) = whole bag.
        path_input_dim, dim, heads, ff_dim, layers: widths (1024, 256, 8, 512, 2).
    """

    def __init__(
        self,
        omic_sizes: Sequence[int],
        *,
        n_bins: int = 4,
        fusion: str = "concat",
        dropout: float = 0.25,
        ot_reg: float = 0.05,
        ot_tau: float | None = 0.5,
        ot_iters: int = 100,
        ot_backend: str = "torch",
        ot_micro_batch: int | None = None,
        eval_micro_batch: int | None = None,
        path_input_dim: int = 1024,
        dim: int = 256,
        heads: int = 8,
        ff_dim: int = 512,
        layers: int = 2,
    ) -> None:
        super().__init__(
            omic_sizes,
            n_bins=n_bins,
            fusion=fusion,
            dropout=dropout,
            path_input_dim=path_input_dim,
            dim=dim,
            heads=heads,
            ff_dim=ff_dim,
            layers=layers,
        )
        if ot_backend not in OT_BACKENDS:
            raise ConfigError(f"ot_backend must be one of {OT_BACKENDS}; got {ot_backend!r}")
        for name, value in (("ot_micro_batch", ot_micro_batch), ("eval_micro_batch", eval_micro_batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be None or an integer >= 1; got {value!r}")
        try:
            self.ot = OTCoAttention(
                reg=ot_reg, reg_m=ot_tau, n_iters=ot_iters, backend=ot_backend, shift_by_min=True
            )
        except ValueError as err:
            raise ConfigError(f"MOTCat OT settings (ot_reg, ot_tau, ot_iters): {err}") from None
        self.ot_micro_batch = ot_micro_batch
        self.eval_micro_batch = eval_micro_batch

    def coattend(self, path_tokens: Tensor, omic_tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``H_hat_p = P*^T H_p`` (Eq. 5), or its mini-batch average (Eq. 7); also returns the plan.

        With chunks the returned ``plan [N, M]`` holds each chunk's plan divided by the number of
        chunks, so that ``coattended = plan^T H_p`` holds in both cases.
        """
        micro_batch = self.ot_micro_batch if self.training else self.eval_micro_batch
        n = path_tokens.shape[0]
        if micro_batch is None or n <= micro_batch:
            coattended, plan = self.ot(path_tokens, omic_tokens)
            return coattended, {"plan": plan}
        chunks = micro_batch_chunks(n, micro_batch, shuffle=self.training, device=path_tokens.device)
        plan = path_tokens.new_zeros(n, omic_tokens.shape[0])
        coattended = path_tokens.new_zeros(omic_tokens.shape)
        # tensor_split gives at most two chunk sizes; each size is one batched OT call
        for size in sorted({len(chunk) for chunk in chunks}):
            index = torch.stack([chunk for chunk in chunks if len(chunk) == size])  # [C_size, size]
            tokens, plans = self.ot(path_tokens[index], omic_tokens)  # [C, M, dim], [C, size, M]
            coattended = coattended + tokens.sum(0)
            plan[index.flatten()] = plans.reshape(-1, plans.shape[-1])
        return coattended / len(chunks), {"plan": plan / len(chunks)}

    def extra_repr(self) -> str:
        return (
            f"omic_sizes={list(self.omic_sizes)}, n_bins={self.n_bins}, fusion={self.fusion!r}, "
            f"ot_micro_batch={self.ot_micro_batch}, eval_micro_batch={self.eval_micro_batch}"
        )
