"""CloudFormer (Shahbazinia et al., arXiv:2509.03394, 2025): VM performance under interference.

Importing this package registers in :data:`interplay.tabular.registry.REGISTRY` the model
``cloudformer``, its baselines (``cloud-lstm``, ``cloud-rf``, ``cloud-lightgbm``, ``cloud-tree``,
``cloud-linear``), the datasets ``cloud-synthetic`` and ``cloudperftrace`` and the task
``cloud-performance``. :func:`run_cloud_protocol` runs the unseen-application protocol (train on 7
applications, test on 4, over 6 partitions).
"""

from interplay.tabular.cloud.baselines import (
    AggregatedRegressor,
    LightGBMRegressor,
    RunLSTM,
    aggregate_features,
)
from interplay.tabular.cloud.data import (
    APPLICATIONS,
    METRIC_GROUPS,
    N_METRICS,
    CloudPerfTraceSchema,
    CloudRun,
    MetricNormalizer,
    SyntheticCloudConfig,
    read_cloudperftrace,
    simulate_runs,
    synthetic_cloudperftrace,
    write_cloudperftrace,
    write_synthetic_cloudperftrace,
)
from interplay.tabular.cloud.evaluation import PROTOCOL, run_cloud_protocol
from interplay.tabular.cloud.model import CloudFormer, count_parameters
from interplay.tabular.cloud.protocol import (
    ApplicationPartition,
    CloudDataModule,
    application_partitions,
    pad_runs,
    split_runs,
)
from interplay.tabular.cloud.tasks import CloudPerformanceTask, log_cosh, percentage_point_errors

__all__ = [
    "APPLICATIONS",
    "METRIC_GROUPS",
    "N_METRICS",
    "PROTOCOL",
    "AggregatedRegressor",
    "ApplicationPartition",
    "CloudDataModule",
    "CloudFormer",
    "CloudPerfTraceSchema",
    "CloudPerformanceTask",
    "CloudRun",
    "LightGBMRegressor",
    "MetricNormalizer",
    "RunLSTM",
    "SyntheticCloudConfig",
    "aggregate_features",
    "application_partitions",
    "count_parameters",
    "log_cosh",
    "pad_runs",
    "percentage_point_errors",
    "read_cloudperftrace",
    "run_cloud_protocol",
    "simulate_runs",
    "split_runs",
    "synthetic_cloudperftrace",
    "write_cloudperftrace",
    "write_synthetic_cloudperftrace",
]
