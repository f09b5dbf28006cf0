"""CloudFormer: a dual-branch transformer predicting a VM's performance under interference.

Shahbazinia, Huang, Costero, Atienza, "CloudFormer: An Attention-based Performance Prediction for
Public Clouds with Unknown Workload" (arXiv:2509.03394, 2025), Sec. 4 (model):

* input ``x in R^{S x T}``: S = 206 metrics (103 of the target VM, 103 averaged over its neighbours)
  for T seconds (T varies per run; batches are zero-padded with a validity mask);
* temporal branch: per-time-step normalisation (``LayerNorm`` over the S metrics of each second),
  ``Dense(S -> d) + ReLU``, sinusoidal positions, a CLS token, encoder blocks whose attention
  ignores padded seconds (``key_padding_mask``);
* system branch: the mean of each metric over the run's real seconds, a ``Conv1d(1 -> d, kernel 1)``
  projection making one d-dimensional token per metric, a CLS token, encoder blocks without a mask
  (attention among metrics: which counters move together);
* fusion: the two CLS outputs concatenated -> ``Linear -> Swish -> LayerNorm -> Dropout(0.4) ->
  Linear -> sigmoid``: ``P_hat = PM_ideal / PM_actual in (0, 1)``.

Blocks are interplay.core's pre-norm :class:`~interplay.core.nn.TransformerBlock` (MHA 4 heads x 16,
FFN 256), attention through :func:`interplay.core.attention.attend`.

Two readings we had to choose (the paper text we could consult gives no code):

* ``shared_encoder`` (default True): the paper reports ~228k parameters with 4 blocks of width 64,
  4 x 16 heads and FFN 256. One such block has 49,984 parameters, so two independent stacks of 4
  come to ~431k; one stack of 4 applied to both token sequences comes to 231,005 (+1.3 % of 228k).
  ``shared_encoder=False`` gives each branch its own stack (430,941 parameters).
* ``metric_positions`` (default True, no parameters): the per-metric tokens of the system branch
  are scalars times one Conv1d filter, identical up to scale, so without an identity the branch
  would see an unlabelled set of values; a fixed sinusoidal code of the metric index tells the
  metrics apart. ``metric_positions=False`` is the literal reading.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from interplay.core.nn import TransformerBlock
from interplay.tabular.cloud.data import N_METRICS
from interplay.tabular.registry import REGISTRY

PAPER_PARAMETERS = 228_000


def sinusoidal_positions(length: int, dim: int, *, device=None, dtype=torch.float32) -> Tensor:
    """``[length, dim]`` sine / cosine codes of positions 0..length-1 (Vaswani et al., 2017, Sec. 3.5)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    codes = torch.zeros(length, dim, device=device, dtype=torch.float32)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return codes.to(dtype)


class CloudFormer(nn.Module):
    """CloudFormer (see the module docstring). ``forward(metrics [B, T, S], mask [B, T]) -> P_hat [B]``.

    Args:
        n_metrics: S, metrics per second (206 for CloudPerfTrace).
        dim: token width d (64).
        heads: attention heads (4, of width ``dim / heads`` = 16).
        depth: encoder blocks per branch (4).
        ffn_dim: hidden width of the blocks' feed-forward (256).
        dropout: dropout inside the blocks.
        fusion_hidden: width of the fusion MLP (128).
        fusion_dropout: dropout of the fusion MLP (0.4).
        shared_encoder: one block stack for both branches (see the module docstring).
        metric_positions: sinusoidal metric-index codes on the system tokens.
        backend: attention backend passed to :func:`interplay.core.attention.attend`.
        target_mean: mean P of the training runs (the data module's ``info``); the output bias
            starts at its logit.
    """

    def __init__(
        self,
        n_metrics: int = N_METRICS,
        dim: int = 64,
        heads: int = 4,
        depth: int = 4,
        ffn_dim: int = 256,
        dropout: float = 0.1,
        fusion_hidden: int = 128,
        fusion_dropout: float = 0.4,
        shared_encoder: bool = True,
        metric_positions: bool = True,
        backend: str = "auto",
        target_mean: float | None = None,
    ) -> None:
        super().__init__()
        if n_metrics < 1 or dim < 2 or dim % 2:
            raise ValueError(f"need n_metrics >= 1 and an even dim >= 2, got {n_metrics}, {dim}")
        self.n_metrics, self.dim = n_metrics, dim
        self.metric_positions = metric_positions

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(dim, heads, mlp_ratio=ffn_dim / dim, dropout=dropout, backend=backend)
                for _ in range(depth)
            )

        # temporal branch
        self.step_norm = nn.LayerNorm(n_metrics)
        self.step_embed = nn.Sequential(nn.Linear(n_metrics, dim), nn.ReLU())
        self.temporal_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_blocks = stack()
        self.temporal_norm = nn.LayerNorm(dim)
        # system branch
        self.metric_embed = nn.Conv1d(1, dim, kernel_size=1)
        self.system_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.system_blocks = self.temporal_blocks if shared_encoder else stack()
        self.system_norm = nn.LayerNorm(dim)
        # fusion
        self.head = nn.Sequential(
            nn.Linear(2 * dim, fusion_hidden),
            nn.SiLU(),  # Swish
            nn.LayerNorm(fusion_hidden),
            nn.Dropout(fusion_dropout),
            nn.Linear(fusion_hidden, 1),
        )
        nn.init.trunc_normal_(self.temporal_cls, std=0.02)
        nn.init.trunc_normal_(self.system_cls, std=0.02)
        if target_mean is not None:
            # start at the training mean: most runs sit near P = 1, where a sigmoid starting at
            # 0.5 would spend its first epochs climbing (and saturating) instead of learning
            initial_output_bias(self.head[-1], target_mean)

    def _check(self, metrics: Tensor, mask: Tensor | None) -> Tensor:
        if metrics.dim() != 3 or metrics.shape[-1] != self.n_metrics:
            raise ValueError(
                f"expected metrics of shape [B, T, {self.n_metrics}], got {tuple(metrics.shape)}"
            )
        if mask is None:
            return torch.ones(metrics.shape[:2], dtype=torch.bool, device=metrics.device)
        if mask.shape != metrics.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(
                f"expected a bool mask of shape {tuple(metrics.shape[:2])}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        return mask

    def temporal_features(self, metrics: Tensor, mask: Tensor) -> Tensor:
        """CLS output ``[B, dim]`` of the temporal branch."""
        b, t, _ = metrics.shape
        tokens = self.step_embed(self.step_norm(metrics))
        tokens = tokens + sinusoidal_positions(t, self.dim, device=metrics.device, dtype=tokens.dtype)
        tokens = torch.cat([self.temporal_cls.expand(b, -1, -1), tokens], dim=1)
        keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        for block in self.temporal_blocks:
            tokens = block(tokens, key_padding_mask=keep)
        return self.temporal_norm(tokens[:, 0])

    def system_features(self, metrics: Tensor, mask: Tensor) -> Tensor:
        """CLS output ``[B, dim]`` of the system branch."""
        weights = mask.to(metrics.dtype)
        mean = (metrics * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)  # [B, S]
        tokens = self.metric_embed(mean[:, None, :]).transpose(1, 2)  # [B, S, dim]
        if self.metric_positions:
            tokens = tokens + sinusoidal_positions(
                self.n_metrics, self.dim, device=metrics.device, dtype=tokens.dtype
            )
        tokens = torch.cat([self.system_cls.expand(metrics.shape[0], -1, -1), tokens], dim=1)
        for block in self.system_blocks:
            tokens = block(tokens)
        return self.system_norm(tokens[:, 0])

    def forward(self, metrics: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = self._check(metrics, mask)
        # padded seconds hold whatever the caller left there: zero them so no NaN / inf leaks in
        metrics = metrics.masked_fill(~mask[..., None], 0.0)
        fused = torch.cat(
            [self.temporal_features(metrics, mask), self.system_features(metrics, mask)], dim=-1
        )
        return torch.sigmoid(self.head(fused)).squeeze(-1)


def initial_output_bias(layer: nn.Linear, target_mean: float) -> None:
    """Set ``layer``'s bias so that ``sigmoid(layer(0)) = target_mean`` (clamped to [0.02, 0.98])."""
    p = min(max(float(target_mean), 0.02), 0.98)
    with torch.no_grad():
        layer.bias.fill_(math.log(p / (1.0 - p)))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@REGISTRY.models.register(
    "cloudformer",
    "CloudFormer: dual-branch transformer, VM performance under interference (Shahbazinia et al., 2025)",
    tags=("cloud",),
)
def cloudformer(n_metrics: int = N_METRICS, **kwargs) -> CloudFormer:
    return CloudFormer(n_metrics=n_metrics, **kwargs)
