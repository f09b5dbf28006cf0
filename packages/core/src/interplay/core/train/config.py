"""Dataclass schema of an experiment: model, data, task, optimiser, trainer.

One YAML file per reproduction fills this schema (see ``configs/`` in each domain package);
``key.sub=value`` overrides on the command line are validated by :mod:`interplay.core.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ModelConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str
    root: str | None = None  # default: $INTERPLAY_DATA or ~/.cache/interplay
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass
class TaskConfig:
    name: str = "classification"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, ...] = (0.9, 0.999)
    scheduler: Literal["none", "cosine", "step"] = "none"
    warmup_epochs: float = 0.0  # linear warm-up, in (fractional) epochs
    min_lr: float = 0.0
    step_size: int = 30  # epochs, for scheduler=step
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {list(self.betas)}")


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = 10
    min_delta: float = 0.0


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp | deepspeed...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed | bf16-true
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    accumulate_grad_batches: int = 1
    monitor: str = "val/loss"  # selection metric; always a validation metric
    monitor_mode: Literal["min", "max"] = "min"
    save_top_k: int = 1
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    deterministic: bool = False
    progress_bar: bool = True
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    limit_test_batches: float | int | None = None
    tensorboard: bool = True  # used when tensorboard is installed
    run_test: bool = True  # score the test split once, after training, with the selected checkpoint

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if not self.monitor.startswith("val"):
            raise ValueError(
                f"monitor must be a validation metric (val/...), got '{self.monitor}': "
                "model selection never looks at the test split"
            )
        if self.accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")


@dataclass
class ExperimentConfig:
    """A whole experiment. ``reported`` holds the paper's figures, compared by ``reproduce``."""

    domain: str
    model: ModelConfig
    data: DataConfig
    task: TaskConfig = field(default_factory=TaskConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    name: str | None = None  # run name, default: model name
    run_root: str = "runs"
    description: str = ""
    paper: str = ""  # citation of the paper a reproduction config follows
    reported: dict[str, float] = field(default_factory=dict)  # metric -> paper's figure
    tolerance: dict[str, float] = field(default_factory=dict)  # metric -> allowed shortfall
    # For papers whose figures are on data nobody can get (Hiformer: Google Play): ``reproduce``
    # also trains these baselines (label -> overrides of this config) and checks the paper's
    # claim ``must_beat`` (metric -> baseline labels whose mean ours must exceed).
    baselines: dict[str, list[str]] = field(default_factory=dict)
    must_beat: dict[str, list[str]] = field(default_factory=dict)
    reproduce_seeds: list[int] = field(default_factory=list)  # reproduce over these (default: [seed])
    # Settings of a domain's own evaluation protocol (cross-validation folds, selection rule), read and
    # validated by the runner the domain gives run_domain_cli(train=...); the engine ignores them.
    evaluation: dict[str, Any] = field(default_factory=dict)
    # Metrics where smaller is better (errors such as test/mae): ``reproduce`` then reaches a paper's
    # figure when ``ours <= paper + tolerance`` and beats a baseline when ours' mean is smaller.
    lower_is_better: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for metric, labels in self.must_beat.items():
            unknown = [label for label in labels if label not in self.baselines]
            if unknown:
                raise ValueError(
                    f"must_beat.{metric} names {', '.join(unknown)}, which are not in baselines "
                    f"({', '.join(self.baselines) or 'none'})"
                )
