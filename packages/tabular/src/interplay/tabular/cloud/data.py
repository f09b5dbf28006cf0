"""CloudPerfTrace: reader, per-time-step normalisation and a synthetic interference generator.

Data of Shahbazinia et al., "CloudFormer: An Attention-based Performance Prediction for Public
Clouds with Unknown Workload" (arXiv:2509.03394, 2025); dataset CloudPerfTrace, CC-BY-4.0.

On disk (the dataset card): parquet under hive partitions ``tasks=<id>/`` (11 applications: 4 Data
Serving, 5 Redis, 6 Web Search, 7 Graph Analytics, 9 Data Analytics, 10 MLPerf, 11 HBase,
13 Alluxio, 14 Minio, 15 TPC-C, 16 Flink) with the columns

* ``perf_ori`` (double): the performance ``P = PM_ideal / PM_actual`` in (0, 1] of one execution;
* ``workload`` (double): the workload level's numeric identifier;
* ``tr_self`` / ``lin_self`` / ``td_self``: libvirt (53), Linux perf (38) and top-down (12) metrics
  of the target VM, and ``tr_oth`` / ``lin_oth`` / ``td_oth`` the same 103 metrics averaged over
  the neighbour VMs: 2 x 103 = 206 metrics per second (the paper's ``x_i in R^{S x T_i}``, S = 206).

The card lists no run identifier and no time column, so one row is one execution (run) and each
metric-group column holds that run's whole series as a nested array: ``[T][k]`` (time-major) or
``[k][T]`` (metric-major); the reader detects which from the group size ``k`` (``layout="auto"``;
a run with ``T == k`` is read as time-major). A long layout (one row per second, group columns of
``k`` values, a run-id column and optionally a time column) is read when
:attr:`CloudPerfTraceSchema.run` names the run column. Column names and group sizes are settings of
:class:`CloudPerfTraceSchema`, so a release with other names needs no code change.

:class:`MetricNormalizer` is the per-time-step normalisation: every metric of every second is
standardised (after a signed ``log1p`` that tames counters spanning orders of magnitude) with a mean
and standard deviation per metric computed over all seconds of the *training* runs only.

:func:`write_synthetic_cloudperftrace` writes the same layout from :func:`simulate_runs`: a VM
running one of 11 applications shares a host with 0-4 neighbour VMs contending for last-level
cache, memory bandwidth and the network. Per second ``t`` the host's demand ``D_r(t)`` for
resource ``r`` (own + neighbours) above capacity gives a pressure ``p_r(t) = softplus(4 (D_r - 1)) / 4``;
the application slows down by ``s(t) = sum_r sens_{a,r} p_r(t)`` while it is active (``a(t)``), so
with work done at rate ``a(t) / (1 + s(t))``::

    P = PM_ideal / PM_actual = sum_t a(t) / sum_t a(t) (1 + s(t))          in (0, 1]

``sens_a`` is application-specific (unknown for an unseen application); the target VM's counters
carry the symptoms ``sens_{a,r} p_r(t)`` and the neighbour means carry the causes (their demand and
``p_r(t)``), each metric a noisy softplus of a fixed random loading of these latent series.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interplay.core.errors import ConfigError, DataError

# The metric groups in the order the model sees them: (column, number of metrics, what they are)
METRIC_GROUPS: tuple[tuple[str, int], ...] = (
    ("tr_self", 53),
    ("lin_self", 38),
    ("td_self", 12),
    ("tr_oth", 53),
    ("lin_oth", 38),
    ("td_oth", 12),
)
GROUP_DESCRIPTIONS = {
    "tr": "libvirt metrics",
    "lin": "Linux perf counters",
    "td": "top-down metrics",
}
N_METRICS = sum(size for _, size in METRIC_GROUPS)  # 206

# task id -> application (dataset card)
APPLICATIONS: dict[int, str] = {
    4: "Data Serving",
    5: "Redis",
    6: "Web Search",
    7: "Graph Analytics",
    9: "Data Analytics",
    10: "MLPerf",
    11: "HBase",
    13: "Alluxio",
    14: "Minio",
    15: "TPC-C",
    16: "Flink",
}

LAYOUTS = ("auto", "time_major", "metric_major")


@dataclass
class CloudRun:
    """One execution: ``metrics [T, n_metrics]`` (float32, one row per second) and its ``target`` P."""

    metrics: np.ndarray
    target: float
    task: int
    workload: float
    run_id: str

    @property
    def length(self) -> int:
        return int(self.metrics.shape[0])


@dataclass(frozen=True)
class CloudPerfTraceSchema:
    """Column names and group sizes of a CloudPerfTrace release (defaults: the dataset card).

    ``groups``: ``(column, number of metrics)`` in model order. ``run`` / ``time``: set ``run`` for
    the long layout (one row per second). ``layout``: nested per-run arrays are ``[T][k]``
    (``time_major``), ``[k][T]`` (``metric_major``) or detected (``auto``).
    """

    target: str = "perf_ori"
    workload: str = "workload"
    groups: tuple[tuple[str, int], ...] = METRIC_GROUPS
    run: str | None = None
    time: str | None = None
    layout: str = "auto"
    partition_key: str = "tasks"
    target_tolerance: float = 0.05  # P up to 1 + tolerance is read (and clipped to 1); above: an error

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(
                f"data.params.schema.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )
        groups = tuple((str(name), int(size)) for name, size in self.groups)
        if not groups or any(size < 1 for _, size in groups):
            raise ConfigError(
                f"data.params.schema.groups must list (column, size >= 1) pairs, got {self.groups!r}"
            )
        object.__setattr__(self, "groups", groups)

    @property
    def n_metrics(self) -> int:
        return sum(size for _, size in self.groups)

    @classmethod
    def from_params(cls, params: dict[str, Any] | CloudPerfTraceSchema | None) -> CloudPerfTraceSchema:
        if params is None:
            return cls()
        if isinstance(params, CloudPerfTraceSchema):
            return params
        if not isinstance(params, dict):
            raise ConfigError(f"data.params.schema must be a mapping, got {type(params).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"data.params.schema: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        values = dict(params)
        if "groups" in values:
            groups = values["groups"]
            if isinstance(groups, dict):
                groups = list(groups.items())
            try:
                values["groups"] = tuple((str(name), int(size)) for name, size in groups)
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"data.params.schema.groups must map column -> number of metrics, got {groups!r}"
                ) from err
        return cls(**values)


def _describe_group(column: str) -> str:
    return GROUP_DESCRIPTIONS.get(column.split("_")[0], "metrics")


# -- reading ---------------------------------------------------------------------------------------------
_PARTITION = re.compile(r"^(?P<key>[^=]+)=(?P<value>.+)$")


def find_partitions(root: str | os.PathLike, schema: CloudPerfTraceSchema | None = None) -> dict[int, Path]:
    """``{task id: directory}`` of the hive partitions ``<key>=<id>`` directly under ``root``."""
    schema = schema or CloudPerfTraceSchema()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"CloudPerfTrace directory not found: {root} (expected the folder holding "
            f"{schema.partition_key}=4/ ... {schema.partition_key}=16/)"
        )
    out: dict[int, Path] = {}
    for child in sorted(root.iterdir()):
        match = _PARTITION.match(child.name)
        if not child.is_dir() or match is None or match["key"] != schema.partition_key:
            continue
        try:
            out[int(match["value"])] = child
        except ValueError as err:
            raise DataError(f"{child}: partition value {match['value']!r} is not an integer task id") from err
    if not out:
        raise DataError(
            f"{root}: no hive partitions '{schema.partition_key}=<id>/' found "
            "(is this the parquet_ds folder?)"
        )
    return out


def read_cloudperftrace(
    root: str | os.PathLike,
    tasks: Iterable[int] | None = None,
    *,
    schema: CloudPerfTraceSchema | dict[str, Any] | None = None,
    max_runs_per_task: int | None = None,
    max_steps: int | None = None,
) -> list[CloudRun]:
    """All runs under ``root`` (the ``parquet_ds`` folder), or those of ``tasks``.

    Each run's metrics are ``float32 [T, 206]`` in :data:`METRIC_GROUPS` order. ``max_steps`` keeps
    the first seconds of longer runs (memory: the full dataset is ~27 million seconds);
    ``max_runs_per_task`` the first runs of each application. Missing columns, wrong metric counts,
    NaN / inf values and targets outside (0, 1] raise :class:`DataError` naming the file and column.
    """
    schema = CloudPerfTraceSchema.from_params(schema)
    partitions = find_partitions(root, schema)
    if tasks is not None:
        wanted = [int(t) for t in tasks]
        missing = [t for t in wanted if t not in partitions]
        if missing:
            raise DataError(f"{root}: no partition for task(s) {missing} (found: {sorted(partitions)})")
        partitions = {t: partitions[t] for t in wanted}
    runs: list[CloudRun] = []
    for task, directory in partitions.items():
        files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"{directory}: partition {schema.partition_key}={task} holds no .parquet file")
        task_runs: list[CloudRun] = []
        for path in files:
            remaining = None if max_runs_per_task is None else max_runs_per_task - len(task_runs)
            if remaining is not None and remaining <= 0:
                break
            task_runs.extend(_read_file(path, task, schema, remaining, max_steps, directory))
        runs.extend(task_runs)
    return runs


def _read_file(
    path: Path,
    task: int,
    schema: CloudPerfTraceSchema,
    limit: int | None,
    max_steps: int | None,
    directory: Path,
) -> list[CloudRun]:
    import pyarrow.parquet as pq

    name = f"{schema.partition_key}={task}/{path.relative_to(directory).as_posix()}"
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError on corrupt files
        raise DataError(f"{path}: not a readable parquet file ({err})") from err
    available = set(parquet.schema_arrow.names)
    needed = [schema.target, schema.workload, *(c for c, _ in schema.groups)]
    needed += [c for c in (schema.run, schema.time) if c]
    missing = [c for c in needed if c not in available]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {', '.join(missing)} (has: {', '.join(sorted(available))}); "
            "set data.params.schema to the release's column names"
        )
    table = parquet.read(columns=needed)
    if schema.run:
        return _long_layout_runs(table, name, task, schema, limit, max_steps)
    if limit is not None:
        table = table.slice(0, limit)
    n = table.num_rows
    targets = _scalar_column(table, schema.target, name)
    workloads = _scalar_column(table, schema.workload, name, allow_nan=True)
    blocks = [_nested_group(table, column, size, name, schema.layout) for column, size in schema.groups]
    runs = []
    for row in range(n):
        lengths = {blocks[g][row].shape[0] for g in range(len(blocks))}
        if len(lengths) != 1:
            detail = ", ".join(f"{c}: {blocks[g][row].shape[0]}" for g, (c, _) in enumerate(schema.groups))
            raise DataError(f"{name}: row {row} has metric groups of different lengths ({detail} seconds)")
        metrics = np.concatenate([blocks[g][row] for g in range(len(blocks))], axis=1)
        if max_steps is not None:
            metrics = metrics[:max_steps]
        runs.append(
            CloudRun(
                metrics=np.ascontiguousarray(metrics, dtype=np.float32),
                target=_check_target(targets[row], name, schema, f"row {row}"),
                task=task,
                workload=float(workloads[row]),
                run_id=f"{name}#{row}",
            )
        )
    return runs


def _scalar_column(table, column: str, name: str, *, allow_nan: bool = False) -> np.ndarray:
    import pyarrow as pa

    array = table.column(column)
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise DataError(f"{name}: column {column} must be numeric, got {array.type}")
    if array.null_count:
        raise DataError(f"{name}: column {column} has {array.null_count} missing value(s)")
    values = array.to_numpy().astype(np.float64)
    if not allow_nan and not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError(f"{name}: column {column} has NaN / inf (first at row {bad})")
    return values


def _check_target(value: float, name: str, schema: CloudPerfTraceSchema, where: str) -> float:
    if not (0.0 < value <= 1.0 + schema.target_tolerance):
        raise DataError(
            f"{name}: {schema.target} = {float(value)!r} at {where} is not a performance ratio "
            f"PM_ideal / PM_actual in (0, 1]"
        )
    return min(float(value), 1.0)


def _nested_group(table, column: str, size: int, name: str, layout: str) -> list[np.ndarray]:
    """Per row ``float32 [T, size]`` from a nested list column (``[T][size]`` or ``[size][T]``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = table.column(column).combine_chunks()
    what = f"{name}: column {column} ({_describe_group(column)}, {size} per second)"
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{what}: row {row} is missing")
    if (
        not pa.types.is_list(array.type)
        and not pa.types.is_large_list(array.type)
        and not (pa.types.is_fixed_size_list(array.type))
    ):
        raise DataError(f"{what}: expected a list column (one series per run), got {array.type}")
    outer = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    inner = array.flatten()
    nested = (
        pa.types.is_list(inner.type)
        or pa.types.is_large_list(inner.type)
        or (pa.types.is_fixed_size_list(inner.type))
    )
    if nested:
        if inner.null_count:
            raise DataError(f"{what}: has missing inner lists")
        inner_lengths = pc.list_value_length(inner).to_numpy(zero_copy_only=False).astype(np.int64)
        values = inner.flatten()
    else:
        inner_lengths = None
        values = inner
    if not pa.types.is_floating(values.type) and not pa.types.is_integer(values.type):
        raise DataError(f"{what}: values must be numeric, got {values.type}")
    if values.null_count:
        raise DataError(f"{what}: has missing values")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        # locate the run for the message
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        per_row = outer if inner_lengths is None else np.add.reduceat(inner_lengths, _starts(outer))
        row = int(np.searchsorted(np.cumsum(per_row), bad, side="right"))
        raise DataError(f"{what}: NaN / inf in row {row}")
    out: list[np.ndarray] = []
    value_start, inner_start = 0, 0
    for row, n_outer in enumerate(outer):
        if inner_lengths is None:  # flat list per run: T * size values, time-major
            if n_outer % size:
                raise DataError(f"{what}: row {row} has {n_outer} values, not a multiple of {size} metrics")
            block = flat[value_start : value_start + n_outer].reshape(-1, size)
            value_start += n_outer
        else:
            lengths = inner_lengths[inner_start : inner_start + n_outer]
            inner_start += n_outer
            count = int(lengths.sum())
            chunk = flat[value_start : value_start + count]
            value_start += count
            time_major = n_outer > 0 and bool((lengths == size).all())
            metric_major = n_outer == size and len(set(lengths.tolist())) == 1
            if layout == "metric_major" or (layout == "auto" and metric_major and not time_major):
                if not metric_major:
                    raise DataError(
                        f"{what}: row {row} has {n_outer} series, expected {size} (metric-major layout)"
                    )
                block = chunk.reshape(size, -1).T
            elif time_major:
                block = chunk.reshape(n_outer, size)
            else:
                got = sorted(set(lengths.tolist()))[:3]
                raise DataError(
                    f"{what}: row {row} has {got} values per second and {n_outer} seconds; "
                    f"expected {size} metrics per second"
                )
        if block.shape[0] == 0:
            raise DataError(f"{what}: row {row} has no time steps")
        out.append(block)
    return out


def _starts(lengths: np.ndarray) -> np.ndarray:
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.minimum(starts, max(0, int(lengths.sum()) - 1))


def _long_layout_runs(
    table, name: str, task: int, schema: CloudPerfTraceSchema, limit: int | None, max_steps: int | None
) -> list[CloudRun]:
    """Long layout: one row per second; group columns hold ``size`` values (or a scalar when size 1)."""
    import pyarrow as pa

    run_ids = table.column(schema.run).to_pylist()
    order = np.arange(table.num_rows)
    if schema.time:
        times = _scalar_column(table, schema.time, name)
        order = np.lexsort((times, np.asarray([str(r) for r in run_ids])))
    columns = []
    for column, size in schema.groups:
        array = table.column(column).combine_chunks()
        what = f"{name}: column {column} ({_describe_group(column)}, {size} per second)"
        if array.null_count:
            raise DataError(f"{what}: has missing rows")
        if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
            if size != 1:
                raise DataError(f"{what}: holds one value per row, expected {size}")
            block = array.to_numpy(zero_copy_only=False).astype(np.float32)[:, None]
        else:
            blocks = _nested_group(
                pa.table({column: pa.ListArray.from_arrays(pa.array([0, len(array)], pa.int32()), array)}),
                column,
                size,
                name,
                "time_major",
            )
            block = blocks[0]
        if not np.isfinite(block).all():
            raise DataError(f"{what}: NaN / inf at row {int(np.flatnonzero(~np.isfinite(block).all(1))[0])}")
        columns.append(block)
    matrix = np.concatenate(columns, axis=1)[order]
    targets = _scalar_column(table, schema.target, name)[order]
    workloads = _scalar_column(table, schema.workload, name, allow_nan=True)[order]
    ids = [run_ids[i] for i in order]
    runs: list[CloudRun] = []
    start = 0
    for end in range(1, len(ids) + 1):
        if end < len(ids) and ids[end] == ids[start]:
            continue
        if limit is not None and len(runs) >= limit:
            break
        metrics = matrix[start:end]
        if max_steps is not None:
            metrics = metrics[:max_steps]
        runs.append(
            CloudRun(
                metrics=np.ascontiguousarray(metrics),
                target=_check_target(targets[start], name, schema, f"run {ids[start]!r}"),
                task=task,
                workload=float(workloads[start]),
                run_id=f"{name}#{ids[start]}",
            )
        )
        start = end
    return runs


def check_runs(runs: Sequence[CloudRun], n_metrics: int = N_METRICS, what: str = "runs") -> None:
    """Raise :class:`DataError` unless each run is a finite ``[T >= 1, n_metrics]`` array, P in (0, 1]."""
    if not runs:
        raise DataError(f"{what}: no runs")
    for run in runs:
        m = run.metrics
        if m.ndim != 2 or m.shape[1] != n_metrics or m.shape[0] < 1:
            raise DataError(
                f"{what}: run {run.run_id} has metrics of shape {tuple(m.shape)}, expected [T, {n_metrics}]"
            )
        if not np.isfinite(m).all():
            raise DataError(f"{what}: run {run.run_id} has NaN / inf metrics")
        if not (0.0 < run.target <= 1.0) or not math.isfinite(run.target):
            raise DataError(f"{what}: run {run.run_id} has target {run.target!r} outside (0, 1]")


# -- per-time-step normalisation --------------------------------------------------------------------------
def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class MetricNormalizer:
    """Standardise each metric of each second with statistics of the training runs' seconds.

    ``log_transform`` first maps ``x -> sign(x) log(1 + |x|)`` (perf counters span many orders of
    magnitude). Metrics constant on the training runs get a unit scale (they map to 0).
    """

    log_transform: bool = True
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, runs: Sequence[CloudRun]) -> MetricNormalizer:
        if not runs:
            raise DataError("cannot fit the metric normalisation on zero runs")
        total = np.zeros(runs[0].metrics.shape[1], dtype=np.float64)
        square = np.zeros_like(total)
        count = 0
        for run in runs:  # streaming sums: the real dataset does not fit twice in memory
            x = self._transform(run.metrics).astype(np.float64)
            total += x.sum(0)
            square += (x * x).sum(0)
            count += x.shape[0]
        mean = total / count
        var = np.maximum(square / count - mean * mean, 0.0)
        std = np.sqrt(var)
        std[std < 1e-8] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        return self

    def _transform(self, x: np.ndarray) -> np.ndarray:
        return signed_log1p(x) if self.log_transform else x

    def transform(self, metrics: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("MetricNormalizer.transform before fit")
        return ((self._transform(metrics) - self.mean) / self.std).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_transform": self.log_transform,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_transform = bool(state["log_transform"])
        self.mean = None if state.get("mean") is None else np.asarray(state["mean"], dtype=np.float32)
        self.std = None if state.get("std") is None else np.asarray(state["std"], dtype=np.float32)


# -- synthetic interference generator ------------------------------------------------------------------
GENERATOR_VERSION = 1
RESOURCES = ("cache", "membw", "network")
# applications whose own load changes during a run (the paper's "dynamic" scenarios); the others
# keep one workload level per run ("static")
SYNTHETIC_DYNAMIC = (5, 11, 14, 15, 16)


@dataclass
class SyntheticCloudConfig:
    """Settings of :func:`simulate_runs` (everything that changes the generated data)."""

    runs_per_application: int = 40
    min_steps: int = 30
    max_steps: int = 120
    applications: tuple[int, ...] = tuple(APPLICATIONS)
    seed: int = 0
    metric_noise: float = 0.05
    target_noise: float = 0.005

    def __post_init__(self) -> None:
        if self.runs_per_application < 1:
            raise ConfigError(f"runs_per_application must be >= 1, got {self.runs_per_application}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ConfigError(
                "need 1 <= min_steps <= max_steps, "
                f"got min_steps={self.min_steps}, max_steps={self.max_steps}"
            )
        self.applications = tuple(int(a) for a in self.applications)
        if len(set(self.applications)) != len(self.applications) or not self.applications:
            raise ConfigError(f"applications must be distinct task ids, got {list(self.applications)}")

    def key(self) -> str:
        payload = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


@dataclass
class _World:
    """The fixed parts of the simulation: sensors (loadings) and per-application traits."""

    loadings: dict[str, np.ndarray]  # group -> [size, n_latent]
    offsets: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]
    sensitivity: dict[int, np.ndarray] = field(default_factory=dict)  # app -> [3]
    demand: dict[int, np.ndarray] = field(default_factory=dict)  # app -> [3]
    signature: dict[int, np.ndarray] = field(default_factory=dict)  # app -> [103] offsets on self metrics
    activity: dict[int, float] = field(default_factory=dict)


# latent series per second (target VM; the neighbour mean uses the same order with its own values)
_LATENT = (
    "demand_cache",
    "demand_membw",
    "demand_network",
    "activity",
    "pressure_cache",
    "pressure_membw",
    "pressure_network",
    "symptom_cache",
    "symptom_membw",
    "symptom_network",
    "slowdown",
)
# which latent series each metric family observes (libvirt sees CPU time, memory and network I/O;
# perf counters see cache / memory behaviour; top-down sees where cycles stall)
_GROUP_LATENTS = {
    "tr": (0, 1, 2, 3, 6, 9),
    "lin": tuple(range(len(_LATENT))),
    "td": (3, 7, 8, 10),
}


def _world(seed: int, applications: Sequence[int]) -> _World:
    rng = np.random.default_rng([seed, 7919])
    loadings, offsets, scales = {}, {}, {}
    for column, size in METRIC_GROUPS:
        family = column.split("_")[0]
        weights = np.zeros((size, len(_LATENT)))
        seen = list(_GROUP_LATENTS[family])
        # each metric reads 1-3 of its family's latent series, with signs (IPC falls as stalls rise)
        for j in range(size):
            picks = rng.choice(seen, size=min(len(seen), int(rng.integers(1, 4))), replace=False)
            weights[j, picks] = rng.normal(0.0, 1.5, size=len(picks))
        loadings[column] = weights
        offsets[column] = rng.normal(0.0, 0.5, size=size)
        # units: counters in the millions, ratios near one
        scales[column] = np.exp(rng.uniform(0.0, 12.0, size=size))
    world = _World(loadings, offsets, scales)
    for app in applications:
        app_rng = np.random.default_rng([seed, 104729, int(app)])
        world.sensitivity[app] = app_rng.uniform(0.1, 1.6, size=3) * app_rng.permutation([1.0, 0.6, 0.3])
        world.demand[app] = app_rng.uniform(0.1, 0.55, size=3)
        world.signature[app] = app_rng.normal(0.0, 0.5, size=2 * 103)  # offsets, then log gains
        world.activity[app] = float(app_rng.uniform(0.4, 0.9))
    return world


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _metrics(world: _World, latent: np.ndarray, side: str, signature: np.ndarray | None, rng, noise: float):
    """``[T, 103]`` metrics of one side (``self`` / ``oth``) from its latent series ``[T, n_latent]``."""
    blocks, start = [], 0
    for column, size in METRIC_GROUPS:
        if not column.endswith(side):
            continue
        pre = latent @ world.loadings[column].T + world.offsets[column]
        gain = 1.0
        if signature is not None:
            # an application's own behaviour shifts and rescales its counters (its IPC, its cache
            # footprint): unseen applications come with unseen offsets
            pre = pre + signature[start : start + size]
            gain = np.exp(signature[103 + start : 103 + start + size])
        start += size
        values = _softplus(pre) * world.scales[column] * gain
        values = values * np.exp(rng.normal(0.0, noise, size=values.shape))
        blocks.append(values)
    return np.concatenate(blocks, axis=1)


def _bursts(rng, steps: int, p_on: float, p_off: float) -> np.ndarray:
    state = rng.random() < p_on / (p_on + p_off)
    out = np.empty(steps)
    for t in range(steps):
        out[t] = state
        state = (rng.random() >= p_off) if state else (rng.random() < p_on)
    return out


def simulate_runs(config: SyntheticCloudConfig | None = None, **kwargs: Any) -> list[CloudRun]:
    """Runs of the synthetic interference model (see the module docstring), ``runs_per_application`` each."""
    config = config or SyntheticCloudConfig(**kwargs)
    world = _world(config.seed, config.applications)
    runs: list[CloudRun] = []
    for app in config.applications:
        rng = np.random.default_rng([config.seed, 15485863, app])
        for index in range(config.runs_per_application):
            steps = int(rng.integers(config.min_steps, config.max_steps + 1))
            t = np.arange(steps)
            level = int(rng.integers(1, 6))  # workload level 1..5
            own_scale = 0.6 + 0.2 * level
            # the VM alternates busy and quiet phases (request bursts, batch stages)
            busy = _bursts(rng, steps, p_on=rng.uniform(0.05, 0.2), p_off=rng.uniform(0.05, 0.2))
            activity = world.activity[app] * (0.15 + 0.85 * busy) + rng.normal(0.0, 0.03, steps)
            activity = np.clip(activity, 0.05, 1.0)
            if app in SYNTHETIC_DYNAMIC:
                period = rng.uniform(10.0, 40.0)
                wave = 0.5 + 0.5 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
                activity = np.clip(activity * (0.3 + 1.2 * wave), 0.05, 1.0)
            own = world.demand[app][None, :] * own_scale * activity[:, None]  # [T, 3]
            n_neighbours = int(rng.integers(0, 5))
            # neighbours driven by the same traffic burst together with the target VM (in or out of
            # phase): how much their bursts overlap its busy phases matters, not only their mean
            coupling = float(rng.uniform(0.0, 1.0))
            neighbour_demand = np.zeros((steps, 3))
            neighbour_activity = np.zeros(steps)
            for _ in range(n_neighbours):
                heavy = int(rng.integers(0, 3))
                base = rng.uniform(0.02, 0.25, size=3)
                base[heavy] = rng.uniform(0.3, 1.0)
                if rng.random() < coupling:
                    on = busy if rng.random() < 0.5 else 1.0 - busy
                else:
                    on = _bursts(rng, steps, p_on=rng.uniform(0.05, 0.3), p_off=rng.uniform(0.02, 0.2))
                intensity = 0.15 + 0.85 * on
                neighbour_demand += base[None, :] * intensity[:, None]
                neighbour_activity += intensity
            total = own + neighbour_demand
            pressure = _softplus(4.0 * (total - 1.0)) / 4.0  # [T, 3]
            symptom = world.sensitivity[app][None, :] * pressure
            slowdown = symptom.sum(1)
            performance = activity.sum() / (activity * (1.0 + slowdown)).sum()
            performance = float(np.clip(performance + rng.normal(0.0, config.target_noise), 1e-3, 1.0))

            latent_self = np.column_stack([own, activity, pressure, symptom, slowdown])
            mean_demand = neighbour_demand / max(n_neighbours, 1)
            mean_activity = neighbour_activity / max(n_neighbours, 1)
            generic = pressure * (n_neighbours > 0)  # a neighbour of unit sensitivity feels the same pressure
            latent_oth = np.column_stack(
                [mean_demand, mean_activity, pressure * (n_neighbours > 0), generic, generic.sum(1)]
            )
            self_metrics = _metrics(
                world, latent_self, "self", world.signature[app], rng, config.metric_noise
            )
            if n_neighbours:
                oth_metrics = _metrics(world, latent_oth, "oth", None, rng, config.metric_noise)
            else:
                oth_metrics = np.zeros((steps, 103))  # no neighbour: the mean over none is reported as 0
            runs.append(
                CloudRun(
                    metrics=np.concatenate([self_metrics, oth_metrics], axis=1).astype(np.float32),
                    target=performance,
                    task=app,
                    workload=float(level),
                    run_id=f"tasks={app}/synthetic#{index}",
                )
            )
    return runs


def write_cloudperftrace(
    runs: Sequence[CloudRun], root: str | os.PathLike, *, file_name: str = "part-0.parquet"
) -> Path:
    """Write ``runs`` as CloudPerfTrace parquet: ``root/tasks=<id>/<file_name>``, one row per run,
    group columns ``list<list<float>>`` (time-major ``[T][k]``). Files are written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interplay.core.data import atomic_save

    check_runs(runs, what="runs to write")
    root = Path(root)
    by_task: dict[int, list[CloudRun]] = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    for task, task_runs in sorted(by_task.items()):
        lengths = np.array([r.length for r in task_runs], dtype=np.int32)
        outer_offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        columns: dict[str, Any] = {
            "perf_ori": pa.array([r.target for r in task_runs], pa.float64()),
            "workload": pa.array([r.workload for r in task_runs], pa.float64()),
        }
        start = 0
        for column, size in METRIC_GROUPS:
            values = np.concatenate([r.metrics[:, start : start + size] for r in task_runs]).reshape(-1)
            inner_offsets = pa.array((np.arange(lengths.sum() + 1) * size).astype(np.int32))
            inner = pa.ListArray.from_arrays(inner_offsets, pa.array(values.astype(np.float32)))
            columns[column] = pa.ListArray.from_arrays(outer_offsets, inner)
            start += size
        table = pa.table(columns)
        atomic_save(lambda temp, table=table: pq.write_table(table, temp), root / f"tasks={task}" / file_name)
    return root


def write_synthetic_cloudperftrace(
    root: str | os.PathLike, config: SyntheticCloudConfig | None = None, **kwargs: Any
) -> Path:
    """Simulate runs and write them in the CloudPerfTrace layout under ``root``; ``root`` is returned.

    A ``generator.json`` written last records the settings, so :func:`synthetic_cloudperftrace`
    regenerates only when they change (or a previous write was interrupted).
    """
    from interplay.core.data import atomic_write

    config = config or SyntheticCloudConfig(**kwargs)
    root = Path(root)
    write_cloudperftrace(simulate_runs(config), root)
    with atomic_write(root / "generator.json") as handle:
        json.dump({**asdict(config), "version": GENERATOR_VERSION, "key": config.key()}, handle, indent=2)
    return root


def synthetic_cloudperftrace(root: str | os.PathLike | None = None, **kwargs: Any) -> Path:
    """The directory of the synthetic dataset with these settings, generated on first use.

    Default location: ``<data root>/cloud-synthetic/<settings hash>`` (see ``INTERPLAY_DATA``).
    """
    from interplay.core.data import dataset_dir

    config = SyntheticCloudConfig(**kwargs)
    directory = Path(root) if root is not None else dataset_dir("cloud-synthetic") / config.key()
    marker = directory / "generator.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("key") == config.key():
                return directory
        except (OSError, ValueError):
            pass
    return write_synthetic_cloudperftrace(directory, config)
