"""Lightning side of the treatment-effect models: data module, task, and a light fitting loop.

:class:`CausalDataModule` serves one replication of a :class:`~interplay.tabular.causal.data.CausalData`
as train / val / test splits of dict batches (``x``, ``t``, ``y``, ``dosage``, and the true
potential outcomes ``mu`` where known). :class:`TreatmentEffectTask` trains any
:class:`~interplay.tabular.causal.base.CausalModel` with manual optimisation, so that TransTEE's
adversarial propensity regularisation takes two optimiser steps per batch:

1. the propensity head ("discriminator") minimises its loss ``L_D`` on *detached* representations;
2. the outcome model minimises ``loss(Q, y) - alpha * L_D`` with the head frozen (only the outcome
   optimiser steps), i.e. it learns representations the head cannot read the treatment from.

Validation and test losses are the factual MSE in standardised outcome units (what model selection
looks at); with true potential outcomes the test also reports ``sqrt_pehe`` and ``ate_error``.

:func:`fit_task` runs Lightning with the engine's trainer settings but keeps the best validation
weights in memory instead of writing a checkpoint per epoch (the models are tiny and the IHDP
protocol fits hundreds of them); the caller saves one checkpoint at the end when it wants one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import ConfigError
from interplay.core.train import OptimizerConfig, TaskModule, TrainerConfig, build_optimizer, build_trainer
from interplay.core.train.task import lr_lambda
from interplay.tabular.causal.base import CausalModel
from interplay.tabular.causal.data import CausalData, CausalInputError
from interplay.tabular.registry import REGISTRY

__all__ = ["BestWeights", "CausalDataModule", "EffectMetrics", "TreatmentEffectTask", "fit_task"]


# -- data ----------------------------------------------------------------------------------------------------
class _Table(Dataset):
    """Row-indexable dict of tensors whose ``__getitems__`` slices whole batches at once."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[index] for k, v in self.tensors.items()}


def _batch_as_is(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return batch


def tensors_of(data: CausalData) -> dict[str, Tensor]:
    """The batch fields of ``data`` (``float32``; treatments ``int64`` when discrete)."""
    out = {
        "x": torch.as_tensor(data.x, dtype=torch.float32),
        "t": torch.as_tensor(data.t, dtype=torch.long if data.treatment != "continuous" else torch.float32),
        "y": torch.as_tensor(data.y, dtype=torch.float32),
    }
    if data.dosage is not None:
        out["dosage"] = torch.as_tensor(data.dosage, dtype=torch.float32)
    if data.potential_outcomes is not None:
        out["mu"] = torch.as_tensor(data.potential_outcomes, dtype=torch.float32)
    return out


class CausalDataModule(SplitDataModule):
    """Train / val / test index splits of one replication of a :class:`CausalData`.

    Args:
        data: the whole replication.
        splits: ``{"train", "val", "test"}`` index arrays (disjoint; train and val non-empty).
        replication: which replication this is; replications: every replication of the dataset
            (the IHDP runner iterates over them).
        source: where the data came from (a folder, a generator), reported in run metrics.
    """

    def __init__(
        self,
        data: CausalData,
        splits: dict[str, np.ndarray],
        *,
        replication: int | None = None,
        replications: tuple[int, ...] = (),
        source: str = "",
        batch_size: int = 128,
        eval_batch_size: int | None = 4096,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        missing = {"train", "val", "test"} - set(splits)
        if missing:
            raise ConfigError(f"CausalDataModule needs train, val and test splits; missing {sorted(missing)}")
        self.index = {s: np.asarray(splits[s], dtype=np.int64) for s in ("train", "val", "test")}
        for split in ("train", "val"):
            if len(self.index[split]) == 0:
                raise CausalInputError(f"{data.name}: the {split} split is empty")
        seen = np.concatenate(list(self.index.values()))
        if len(np.unique(seen)) != len(seen) or seen.min() < 0 or seen.max() >= len(data):
            raise CausalInputError(f"{data.name}: splits overlap or index outside 0..{len(data) - 1}")
        self.data = data
        self.replication = replication
        self.replications = tuple(replications) or ((replication,) if replication is not None else (0,))
        self.source = source or data.name
        self.info = {
            "n_covariates": data.n_covariates,
            "treatment": data.treatment,
            "n_treatments": data.n_treatments,
        }

    def split(self, name: str) -> CausalData:
        """The units of split ``name`` (``train``, ``val``, ``test`` or ``fit`` = train + val)."""
        if name == "fit":
            return self.data.subset(np.concatenate([self.index["train"], self.index["val"]]))
        if name not in self.index:
            raise ConfigError(f"split must be train, val, test or fit, got {name!r}")
        return self.data.subset(self.index[name])

    def scaling(self) -> dict[str, np.ndarray | None]:
        """Statistics of the training split that :meth:`CausalModel.set_scaling` takes."""
        train = self.split("train")
        continuous = {"continuous": train.t, "dosage": train.dosage}.get(train.treatment)
        return {"x": train.x, "y": train.y, "t_continuous": continuous}

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {
                s: _Table(tensors_of(self.split(s))) for s in ("train", "val", "test") if len(self.index[s])
            }

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup(None)
        if split not in self.datasets:
            raise ConfigError(f"split '{split}' is empty for {self.data.name}")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=_batch_as_is,
            num_workers=self.num_workers,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "replication": self.replication,
            "source": self.source,
            "sizes": {s: len(i) for s, i in self.index.items()},
        }


# -- metrics -------------------------------------------------------------------------------------------------
class EffectMetrics(torchmetrics.Metric):
    """sqrt(PEHE) and ATE error of discrete treatments, averaged over the contrasts k vs 0."""

    full_state_update = False

    def __init__(self, n_treatments: int) -> None:
        super().__init__()
        self.n_contrasts = n_treatments - 1
        self.add_state("squared", torch.zeros(self.n_contrasts, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("estimated", torch.zeros(self.n_contrasts, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("true", torch.zeros(self.n_contrasts, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, potential_hat: Tensor, potential: Tensor) -> None:
        tau_hat = (potential_hat[:, 1:] - potential_hat[:, :1]).double()
        tau = (potential[:, 1:] - potential[:, :1]).double()
        self.squared += ((tau_hat - tau) ** 2).sum(0)
        self.estimated += tau_hat.sum(0)
        self.true += tau.sum(0)
        self.count += len(tau)

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp(min=1)
        pehe = (self.squared / n).mean()
        ate = ((self.estimated - self.true) / n).abs().mean()
        return {"sqrt_pehe": pehe.sqrt().float(), "ate_error": ate.float()}


# -- task ----------------------------------------------------------------------------------------------------
def outcome_optimizer(params, cfg: OptimizerConfig, nesterov: bool) -> torch.optim.Optimizer:
    """The engine's optimiser (no decay on biases and norms), with Nesterov momentum for SGD as
    TransTEE's training uses. Adam/AdamW run fused on CPU: these models have dozens of tiny
    parameter tensors, and the per-tensor update loop costs as much as their forward pass."""
    optimizer = build_optimizer(params, cfg)
    groups = optimizer.param_groups
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov and cfg.momentum > 0
        )
    fused = all(p.device.type == "cpu" for g in groups for p in g["params"])
    kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return kind(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


@REGISTRY.tasks.register(
    "treatment-effect", "outcome regression with TransTEE's adversarial propensity step (manual optimisation)"
)
class TreatmentEffectTask(TaskModule):
    """Train a :class:`CausalModel`; see the module docstring for the two optimiser steps.

    Args:
        model: the outcome model.
        optimizer: the outcome model's optimiser and schedule (SGD gets Nesterov momentum when ``nesterov``).
        adversary_lr, adversary_weight_decay: the propensity head's SGD (the code's ``tr_optimizer``:
            lr 1e-3, weight decay 5e-3, constant rate).
    """

    def __init__(
        self,
        model: CausalModel,
        optimizer: OptimizerConfig | None = None,
        adversary_lr: float = 1e-3,
        adversary_weight_decay: float = 5e-3,
        nesterov: bool = True,
    ) -> None:
        super().__init__(model, optimizer)
        if not isinstance(model, CausalModel):
            raise ConfigError(f"task 'treatment-effect' needs a CausalModel, got {type(model).__name__}")
        self.automatic_optimization = False
        self.adversary_lr, self.adversary_weight_decay, self.nesterov = (
            adversary_lr,
            adversary_weight_decay,
            nesterov,
        )
        if model.treatment in ("binary", "categorical"):
            self.metrics.update(
                {
                    "test_metrics": torchmetrics.MetricCollection(
                        {"effect": EffectMetrics(model.n_treatments)}, prefix="test/"
                    )
                }
            )
        self.adversary_loss_mean = torchmetrics.MeanMetric()

    @property
    def has_adversary(self) -> bool:
        return self.model.propensity_head is not None

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "scaling"):
            self.model.set_scaling(**datamodule.scaling())

    def configure_optimizers(self):
        cfg = self.optimizer_config
        optimizer = outcome_optimizer(self.model.outcome_parameters(), cfg, self.nesterov)
        optimizers = [optimizer]
        if self.has_adversary:
            optimizers.append(
                torch.optim.SGD(
                    self.model.adversary_parameters(),
                    lr=self.adversary_lr,
                    weight_decay=self.adversary_weight_decay,
                )
            )
        if cfg.scheduler == "none" and cfg.warmup_epochs == 0:
            return optimizers
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, per_epoch, total))
        return optimizers, [{"scheduler": scheduler, "interval": "step"}]

    def _forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model(batch["x"], batch["t"], batch.get("dosage"))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        output = self._forward(batch)
        loss, parts = self.model.loss(output, batch)
        if self.has_adversary:
            discriminator = optimizers[1]
            # 1. the propensity head learns to read the treatment from (fixed) representations
            head_loss = self.model.adversary_loss(output["representation"].detach(), batch)
            discriminator.zero_grad(set_to_none=True)
            self.manual_backward(head_loss)
            discriminator.step()
            # 2. the outcome model is rewarded for making that harder (the head is not stepped here)
            adversary = self.model.adversary_loss(output["representation"], batch)
            loss = loss - self.model.adversarial_weight * adversary
            self.adversary_loss_mean.update(adversary.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train loss is {loss.item()} at step {self.global_step}")
        optimizers[0].zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizers[0].step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.losses["train_loss"].update(parts["mse"].detach(), len(batch["y"]))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.adversary_loss_mean.update_called:
            self.log("train/adversary_loss", self.adversary_loss_mean.compute(), sync_dist=False)
        self.adversary_loss_mean.reset()

    def step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        output = self._forward(batch)
        mse = torch.mean((output["outcome"] - self.model.standardise_outcome(batch["y"])) ** 2)
        metrics = self.stage_metrics(stage)
        if metrics is not None and "mu" in batch:
            metrics.update(
                self.model.potential_outcomes(batch["x"], batch.get("dosage")).detach(), batch["mu"]
            )
        return mse

    def _log_epoch(self, stage: str) -> None:
        metrics = self.stage_metrics(stage)
        if metrics is not None and not all(m.update_called for m in metrics.values()):
            metrics.reset()  # no true potential outcomes in this split: nothing to report
            metrics = None
        loss = self.losses[f"{stage}_loss"]
        values: dict[str, Tensor] = {}
        if loss.update_called:
            values[f"{stage}/loss"] = loss.compute()
        if metrics is not None:
            for name, value in metrics.compute().items():
                values.update(value if isinstance(value, dict) else {name: value})
            metrics.reset()
        loss.reset()
        if values:
            self.log_dict(
                {k if "/" in k else f"{stage}/{k}": v for k, v in values.items()},
                prog_bar=stage != "test",
                sync_dist=False,  # torchmetrics has already reduced them across processes
                rank_zero_only=False,
            )

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {"t": batch["t"], "y": batch["y"]}
        out["y_hat"] = self.model.predict_outcome(batch["x"], batch["t"], batch.get("dosage"))
        if self.model.treatment != "continuous":
            out["mu_hat"] = self.model.potential_outcomes(batch["x"], batch.get("dosage"))
        return out


# -- fitting -------------------------------------------------------------------------------------------------
class BestWeights(pl.Callback):
    """Keeps the weights of the best validation epoch in memory and restores them when fitting ends."""

    def __init__(self, monitor: str = "val/loss", mode: str = "min") -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(
                f"monitor '{self.monitor}' was not logged (logged: {sorted(trainer.callback_metrics)})"
            )
        value = float(value)
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better and math.isfinite(value):
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def fit_task(
    task: TreatmentEffectTask,
    datamodule: CausalDataModule,
    trainer_config: TrainerConfig,
    *,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Fit ``task`` with the engine's trainer settings; select on ``trainer_config.monitor``.

    ``log_dir`` gets Lightning's ``metrics.csv`` (per-epoch losses); nothing else is written.
    Returns ``best_val``, ``best_epoch``, ``epochs`` and ``fit_seconds``.
    """
    best = BestWeights(trainer_config.monitor, trainer_config.monitor_mode)
    extra: dict[str, Any] = {"num_sanity_val_steps": 0}
    if log_dir is not None:
        from lightning.pytorch.loggers import CSVLogger

        extra["logger"] = CSVLogger(save_dir=str(log_dir), name="", version="")
    trainer = build_trainer(trainer_config, None, callbacks=[best], **extra)
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    seconds = time.perf_counter() - start
    task.eval()
    return {
        "best_val": best.best,
        "best_epoch": best.best_epoch,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(seconds, 3),
        "trainer": trainer,
    }
