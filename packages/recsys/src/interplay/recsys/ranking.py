"""Full-ranking top-K evaluation and the ``topk`` training task (KGAT's protocol, Wang et al., KDD 2019,
"KGAT: Knowledge Graph Attention Network for Recommendation", Section 4.1.1 and Algorithm 1).

Evaluation ranks **all** items for every user of the split, with the user's known items excluded
(training items for validation; training and validation items for test). Per user, with ``T`` the
ground-truth items and ``hits_K`` the number of them in the top ``K``:

* ``recall@K = hits_K / |T|``, ``precision@K = hits_K / K``, ``hit@K = [hits_K > 0]``;
* ``ndcg@K = DCG@K / IDCG@K`` with ``DCG@K = sum_{j <= K} rel_j / log2(j + 1)`` and the standard
  ideal ``IDCG@K = sum_{j <= min(|T|, K)} 1 / log2(j + 1)``;
* with ``kgat_compat=True`` also ``ndcg_kgat@K``: the reference code's NDCG, whose ideal ranking only
  holds the hits found inside the top ``max(ks)`` (100), ``IDCG = sum_{j <= min(hits_100, K)}``, and 0
  without hits. It is never below the standard NDCG (it inflates the paper's figures).

Scores ``e_u . e_i`` are computed for ``chunk`` users at a time (``[chunk, n_items]`` floats), so memory
stays bounded whatever the number of users. The figures are means over the split's users.

:class:`TopKTask` (registered as ``topk``) trains with Lightning's manual optimisation. Models
declare ``training_mode``: ``cf`` (BPR only: BPR-MF, LightGCN), ``joint`` (one loss with a KG part
per batch: CKE) or ``alternating`` (KGAT: each epoch a CF phase with the first Adam optimiser, then
a KG phase with the second, plus a :class:`torch.optim.SparseAdam` for parameters the model
declares row-sparse in that phase; the model's attention is refreshed once the KG phase is over,
before it is read again by the next CF phase or an evaluation). Validation logs ``val/recall@20`` etc.; the
configs select on ``val/recall@20``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import build_optimizer
from interplay.recsys.registry import REGISTRY

__all__ = [
    "DEFAULT_KS",
    "TopKMetrics",
    "TopKTask",
    "evaluate_full_ranking",
    "metric_names",
    "rank_items",
    "ranking_metrics",
]

DEFAULT_KS = (20, 40, 60, 80, 100)
TRAINING_MODES = ("cf", "joint", "alternating")


def metric_names(ks: Sequence[int], kgat_compat: bool = False) -> list[str]:
    kinds = ["recall", "precision", "hit", "ndcg"] + (["ndcg_kgat"] if kgat_compat else [])
    return [f"{kind}@{k}" for k in ks for kind in kinds]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(k) for k in ks)
    if not values or min(values) < 1:
        raise ConfigError(f"task.params.ks must be a non-empty list of positive integers, got {list(ks)}")
    return values


def ranking_metrics(
    top_items: Tensor,
    truth_ptr: Tensor,
    truth_items: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    kgat_compat: bool = False,
    valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-user metrics (float64 ``[B]`` each) of ranked lists ``top_items`` ``[B, >= max(ks)]``.

    ``truth_ptr`` ``[B + 1]`` / ``truth_items`` hold each user's ground truth in CSR form. ``valid``
    (``[B, K]`` bool, optional) marks ranked entries that are real candidates; others never count as
    hits (a list longer than the candidates left after exclusion).
    """
    ks = _check_ks(ks)
    k_max = max(ks)
    if top_items.dim() != 2 or top_items.size(1) < k_max:
        raise ValueError(f"top_items must be [B, >= {k_max}], got {tuple(top_items.shape)}")
    top_items = top_items[:, :k_max].long()
    n_users = top_items.size(0)
    counts = truth_ptr[1:] - truth_ptr[:-1]
    if counts.numel() != n_users:
        raise ValueError(f"truth_ptr has {counts.numel()} users, top_items {n_users}")
    bound = (
        int(
            max(
                top_items.max().item() if top_items.numel() else 0,
                truth_items.max().item() if truth_items.numel() else 0,
            )
        )
        + 1
    )
    rows = torch.repeat_interleave(torch.arange(n_users, device=top_items.device), counts)
    truth_keys = torch.sort(rows * bound + truth_items.long()).values
    queries = torch.arange(n_users, device=top_items.device).unsqueeze(1) * bound + top_items
    if truth_keys.numel():
        position = torch.searchsorted(truth_keys, queries).clamp(max=truth_keys.numel() - 1)
        hits = truth_keys[position] == queries
    else:
        hits = torch.zeros_like(queries, dtype=torch.bool)
    if valid is not None:
        hits &= valid[:, :k_max]
    hits = hits.double()
    discount = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64, device=hits.device))
    ideal = torch.cat([discount.new_zeros(1), torch.cumsum(discount, 0)])  # ideal[n] = sum_{j<=n}
    n_truth = counts.double()
    hits_in_list = hits.sum(1).long()
    out: dict[str, Tensor] = {}
    for k in ks:
        n_hit = hits[:, :k].sum(1)
        dcg = (hits[:, :k] * discount[:k]).sum(1)
        out[f"recall@{k}"] = torch.where(n_truth > 0, n_hit / n_truth.clamp(min=1), 0.0)
        out[f"precision@{k}"] = n_hit / k
        out[f"hit@{k}"] = (n_hit > 0).double()
        idcg = ideal[counts.clamp(max=k)]
        out[f"ndcg@{k}"] = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), 0.0)
        if kgat_compat:
            idcg_kgat = ideal[hits_in_list.clamp(max=k)]
            out[f"ndcg_kgat@{k}"] = torch.where(idcg_kgat > 0, dcg / idcg_kgat.clamp(min=1e-12), 0.0)
    return out


def rank_items(
    user_embeddings: Tensor,
    item_embeddings: Tensor,
    exclude_ptr: Tensor,
    exclude_items: Tensor,
    k: int,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` items ``[B, k]`` by ``e_u . e_i`` over all items, excluded items masked out, and a
    ``[B, k]`` mask of real candidates (False where fewer than ``k`` items remained)."""
    scores = user_embeddings @ item_embeddings.T
    counts = exclude_ptr[1:] - exclude_ptr[:-1]
    rows = torch.repeat_interleave(torch.arange(scores.size(0), device=scores.device), counts)
    scores[rows, exclude_items.long()] = float("-inf")
    k = min(k, scores.size(1))
    top_scores, top_items = torch.topk(scores, k, dim=1)
    return top_items, top_scores > float("-inf")


def evaluate_batch(
    user_embeddings: Tensor,
    item_embeddings: Tensor,
    batch: dict[str, Tensor],
    ks: Sequence[int],
    kgat_compat: bool = False,
) -> dict[str, Tensor]:
    """Per-user metrics of one evaluation batch (``users``, ``truth_*``, ``exclude_*`` CSR slices)."""
    k_max = max(ks)
    users = batch["users"].long()
    top, valid = rank_items(
        user_embeddings[users], item_embeddings, batch["exclude_ptr"], batch["exclude_items"], k_max
    )
    if top.size(1) < k_max:  # fewer items than K: pad with non-candidates
        pad = k_max - top.size(1)
        top = torch.cat([top, top.new_zeros(top.size(0), pad)], 1)
        valid = torch.cat([valid, valid.new_zeros(valid.size(0), pad)], 1)
    return ranking_metrics(
        top, batch["truth_ptr"], batch["truth_items"], ks, kgat_compat=kgat_compat, valid=valid
    )


@torch.no_grad()
def evaluate_full_ranking(
    model: nn.Module,
    datamodule: Any,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    kgat_compat: bool = False,
) -> dict[str, float]:
    """Mean metrics of ``model`` (with ``final_embeddings()``) over every user of ``split``; users are
    scored ``datamodule.eval_batch_size`` at a time."""
    ks = _check_ks(ks)
    was_training = model.training
    model.eval()
    try:
        users, items = model.final_embeddings()
        sums: dict[str, float] = {}
        count = 0
        for batch in datamodule.evaluation_users(split):
            per_user = evaluate_batch(users, items, batch, ks, kgat_compat)
            for name, values in per_user.items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
            count += len(batch["users"])
    finally:
        model.train(was_training)
    return {name: total / max(count, 1) for name, total in sums.items()}


class TopKMetrics(torchmetrics.Metric):
    """Means over users of :func:`ranking_metrics` (sums and a count, synchronised by torchmetrics)."""

    full_state_update = False

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, kgat_compat: bool = False) -> None:
        super().__init__()
        self.ks = _check_ks(ks)
        self.kgat_compat = kgat_compat
        self.names = metric_names(self.ks, kgat_compat)
        self.add_state("sums", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, per_user: dict[str, Tensor]) -> None:
        self.sums += torch.stack([per_user[name].sum() for name in self.names]).to(self.sums)
        self.count += next(iter(per_user.values())).numel()

    def compute(self) -> dict[str, Tensor]:
        means = (self.sums / self.count.clamp(min=1)).float()
        return dict(zip(self.names, means.unbind(0)))


@REGISTRY.tasks.register(
    "topk", "top-K recommendation: BPR (+ TransR phase), full ranking with recall/precision/hit/NDCG@K"
)
class TopKTask(TaskModule):
    """Manual-optimisation task for top-K recommenders (see the module docstring).

    The model provides ``training_mode``, ``cf_loss(batch) -> (loss, parts)``,
    ``final_embeddings() -> (users, items)``, and for ``alternating`` also ``kg_loss``,
    ``kg_parameters()`` and ``refresh_attention()``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig | None = None,
        ks: Sequence[int] = DEFAULT_KS,
        kgat_compat: bool = False,
    ) -> None:
        super().__init__(model, optimizer)
        self.automatic_optimization = False
        self.training_mode = getattr(model, "training_mode", "cf")
        if self.training_mode not in TRAINING_MODES:
            raise ConfigError(
                f"model {type(model).__name__} has unknown training_mode {self.training_mode!r}"
            )
        for method in ("cf_loss", "final_embeddings") + (
            ("kg_loss", "kg_parameters", "refresh_attention") if self.training_mode == "alternating" else ()
        ):
            if not callable(getattr(model, method, None)):
                raise ConfigError(
                    f"task 'topk' needs a model with {method}(); {type(model).__name__} has none"
                )
        self.ks = _check_ks(ks)
        self.kgat_compat = kgat_compat
        self.metrics.update(
            {
                f"{stage}_metrics": torchmetrics.MetricCollection(
                    {"topk": TopKMetrics(self.ks, kgat_compat)}, prefix=f"{stage}/"
                )
                for stage in ("val", "test")
            }
        )
        self.phase_losses = nn.ModuleDict({"kg_loss": torchmetrics.MeanMetric()})
        self._attention_stale = False
        self._eval_embeddings: tuple[Tensor, Tensor] | None = None

    # -- training ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "training_mode"):
            datamodule.training_mode = self.training_mode

    def configure_optimizers(self):
        cfg = self.optimizer_config
        if cfg.scheduler != "none" or cfg.warmup_epochs:
            raise ConfigError(
                "task 'topk' trains with a constant learning rate: set optimizer.scheduler=none"
            )
        cf = build_optimizer(self.model.parameters(), cfg)
        if self.training_mode != "alternating":
            return cf
        sparse = getattr(self.model, "sparse_kg_parameters", list)()
        dense = [p for p in self.model.kg_parameters() if all(p is not q for q in sparse)]
        optimizers = [cf, build_optimizer(dense, cfg)]
        if sparse:
            if cfg.name != "adam" or cfg.weight_decay:
                raise ConfigError(
                    "sparse KG gradients are updated with SparseAdam: set optimizer.name=adam and "
                    "optimizer.weight_decay=0, or model.params.sparse_kg_gradients=false"
                )
            optimizers.append(torch.optim.SparseAdam(sparse, lr=cfg.lr, betas=tuple(cfg.betas)))
        return optimizers

    def refresh_attention(self) -> None:
        """Refresh the model's attention if a KG phase has run since the last refresh."""
        if self._attention_stale:
            self.model.refresh_attention()
            self._attention_stale = False

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        phase = batch.get("phase", "cf")
        if phase == "kg":
            if self.training_mode != "alternating":
                return None
            loss, _ = self.model.kg_loss(batch)
            active, tracker = optimizers[1:], self.phase_losses["kg_loss"]
            self._attention_stale = True
        else:
            self.refresh_attention()
            loss, _ = self.model.cf_loss(batch)
            active, tracker = optimizers[:1], self.losses["train_loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{phase} loss is {loss.item()} at step {self.global_step}")
        for optimizer in active:  # set_to_none: each phase's optimisers see only its own gradient
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for optimizer in active:
            optimizer.step()
        tracker.update(loss.detach())
        return None

    def on_train_epoch_end(self) -> None:
        self.refresh_attention()
        super().on_train_epoch_end()
        metric = self.phase_losses["kg_loss"]
        if metric.update_called:
            self.log("train/kg_loss", metric.compute(), sync_dist=False)
        metric.reset()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._attention_stale = False  # the checkpoint holds the attention its weights were used with

    # -- evaluation ----------------------------------------------------------------------------------
    def _embeddings(self) -> tuple[Tensor, Tensor]:
        if self._eval_embeddings is None:
            with torch.no_grad():
                users, items = self.model.final_embeddings()
            self._eval_embeddings = (users.detach(), items.detach())
        return self._eval_embeddings

    def _start_evaluation(self) -> None:
        self.refresh_attention()
        self._eval_embeddings = None

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        users, items = self._embeddings()
        self.stage_metrics(stage).update(evaluate_batch(users, items, batch, self.ks, self.kgat_compat))

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def on_predict_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._eval_embeddings = None

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._eval_embeddings = None

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        users, items = self._embeddings()
        top, _ = rank_items(
            users[batch["users"]], items, batch["exclude_ptr"], batch["exclude_items"], max(self.ks)
        )
        return {"user": batch["users"], "items": top}
