"""Training: task base class, experiment schema, Lightning trainer factory, run directories."""

from interplay.core.train.checkpoint import AtomicCheckpointIO, load_checkpoint
from interplay.core.train.config import (
    DataConfig,
    EarlyStoppingConfig,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    TaskConfig,
    TrainerConfig,
)
from interplay.core.train.engine import (
    RunResult,
    build_experiment,
    build_trainer,
    evaluate,
    predict,
    restore,
    train,
)
from interplay.core.train.runs import collect_versions, create_run_dir, open_run_dir, run_directory
from interplay.core.train.task import ClassificationTask, TaskModule, build_optimizer

__all__ = [
    "AtomicCheckpointIO",
    "ClassificationTask",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RunResult",
    "TaskConfig",
    "TaskModule",
    "TrainerConfig",
    "build_experiment",
    "build_optimizer",
    "build_trainer",
    "collect_versions",
    "create_run_dir",
    "open_run_dir",
    "run_directory",
    "evaluate",
    "load_checkpoint",
    "predict",
    "restore",
    "train",
]
