"""CloudPerfTrace reader, per-time-step normalisation and the synthetic interference generator."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interplay.core.errors import ConfigError, DataError
from interplay.tabular.cloud import (
    METRIC_GROUPS,
    N_METRICS,
    CloudPerfTraceSchema,
    CloudRun,
    MetricNormalizer,
    read_cloudperftrace,
    simulate_runs,
    synthetic_cloudperftrace,
    write_cloudperftrace,
)

SMALL = dict(runs_per_application=3, min_steps=5, max_steps=9, applications=(4, 5, 6), seed=1)


@pytest.fixture(scope="module")
def runs():
    return simulate_runs(**SMALL)


@pytest.fixture
def dataset(tmp_path, runs):
    return write_cloudperftrace(runs, tmp_path / "parquet_ds")


def _rewrite(path, **columns):
    table = pq.read_table(path)
    for name, array in columns.items():
        if array is None:
            table = table.drop_columns([name])
        else:
            table = table.set_column(table.schema.get_field_index(name), name, array)
    pq.write_table(table, path)


def _nested(blocks, time_major=True):
    """A list<list<float>> column from per-row 2-D arrays ([T][k] or, transposed, [k][T])."""
    rows = [b if time_major else b.T for b in blocks]
    return pa.array([r.tolist() for r in rows], type=pa.list_(pa.list_(pa.float32())))


def test_metric_groups_are_the_papers_206():
    assert N_METRICS == 206 == 2 * (53 + 38 + 12)
    assert [c for c, _ in METRIC_GROUPS] == ["tr_self", "lin_self", "td_self", "tr_oth", "lin_oth", "td_oth"]


def test_synthetic_runs_are_valid_and_reproducible(runs):
    assert len(runs) == 9 and {r.task for r in runs} == {4, 5, 6}
    for run in runs:
        assert run.metrics.dtype == np.float32 and run.metrics.shape[1] == 206
        assert 5 <= run.length <= 9 and np.isfinite(run.metrics).all()
        assert 0.0 < run.target <= 1.0 and run.workload in {1.0, 2.0, 3.0, 4.0, 5.0}
    again = simulate_runs(**SMALL)
    assert all(np.array_equal(a.metrics, b.metrics) and a.target == b.target for a, b in zip(runs, again))
    other = simulate_runs(**{**SMALL, "seed": 2})
    assert not np.allclose(runs[0].target, other[0].target) or runs[0].length != other[0].length


def test_synthetic_interference_degrades_performance():
    # more neighbours contending for the same host resources -> lower P on average
    many = simulate_runs(runs_per_application=40, min_steps=20, max_steps=30, applications=(4, 15), seed=3)
    idle = [r.target for r in many if np.allclose(r.metrics[:, 103:], 0.0)]  # no neighbour VM
    busy = [r.target for r in many if r.metrics[:, 103:].mean() > 0]
    assert idle and busy
    assert np.mean(idle) > np.mean(busy) + 0.05
    assert min(idle) > 0.75  # alone on the host, the VM only contends with itself


def test_reader_round_trips_the_synthetic_parquet(dataset, runs):
    assert sorted(p.name for p in dataset.iterdir()) == ["tasks=4", "tasks=5", "tasks=6"]
    table = pq.read_table(dataset / "tasks=4" / "part-0.parquet")
    assert {"perf_ori", "workload", "tr_self", "td_oth"} <= set(table.column_names)
    nested = table.schema.field("lin_self").type  # list<list<float32>>, [T][38] per run
    assert pa.types.is_list(nested) and pa.types.is_list(nested.value_type)
    assert pa.types.is_float32(nested.value_type.value_type)
    back = read_cloudperftrace(dataset)
    assert len(back) == len(runs)
    for original, read in zip(runs, back):
        assert read.task == original.task and read.workload == original.workload
        assert read.target == pytest.approx(original.target)
        np.testing.assert_array_equal(read.metrics, original.metrics)
        assert read.run_id.startswith(f"tasks={original.task}/part-0.parquet#")
    only = read_cloudperftrace(dataset, tasks=[5], max_runs_per_task=2, max_steps=4)
    assert [r.task for r in only] == [5, 5] and all(r.length == 4 for r in only)


def test_synthetic_dataset_is_generated_once(tmp_path):
    root = synthetic_cloudperftrace(tmp_path / "syn", **SMALL)
    marker = (root / "generator.json").stat().st_mtime_ns
    assert synthetic_cloudperftrace(tmp_path / "syn", **SMALL) == root
    assert (root / "generator.json").stat().st_mtime_ns == marker
    assert len(read_cloudperftrace(root)) == 9


def test_metric_major_and_long_layouts(tmp_path, runs):
    task_runs = [r for r in runs if r.task == 4]
    columns = {
        "perf_ori": pa.array([r.target for r in task_runs]),
        "workload": pa.array([r.workload for r in task_runs]),
    }
    start = 0
    for column, size in METRIC_GROUPS:
        columns[column] = _nested([r.metrics[:, start : start + size] for r in task_runs], time_major=False)
        start += size
    (tmp_path / "wide" / "tasks=4").mkdir(parents=True)
    pq.write_table(pa.table(columns), tmp_path / "wide" / "tasks=4" / "a.parquet")
    back = read_cloudperftrace(tmp_path / "wide")
    for original, read in zip(task_runs, back):
        np.testing.assert_array_equal(read.metrics, original.metrics)

    # long layout: one row per second, a run column and a time column (rows shuffled)
    rows = {"run": [], "t": [], "perf_ori": [], "workload": [], **{c: [] for c, _ in METRIC_GROUPS}}
    for index, run in enumerate(task_runs):
        for t in range(run.length):
            rows["run"].append(f"r{index}")
            rows["t"].append(float(t))
            rows["perf_ori"].append(run.target)
            rows["workload"].append(run.workload)
            start = 0
            for column, size in METRIC_GROUPS:
                rows[column].append(run.metrics[t, start : start + size].tolist())
                start += size
    order = np.random.default_rng(0).permutation(len(rows["run"]))
    shuffled = {k: [v[i] for i in order] for k, v in rows.items()}
    (tmp_path / "long" / "tasks=4").mkdir(parents=True)
    pq.write_table(pa.table(shuffled), tmp_path / "long" / "tasks=4" / "b.parquet")
    long = read_cloudperftrace(tmp_path / "long", schema={"run": "run", "time": "t"})
    assert len(long) == len(task_runs)
    for original, read in zip(task_runs, long):
        np.testing.assert_array_equal(read.metrics, original.metrics)
        assert read.target == pytest.approx(original.target)


def test_configurable_column_names(tmp_path, dataset):
    path = dataset / "tasks=4" / "part-0.parquet"
    table = pq.read_table(path)
    pq.write_table(table.rename_columns(["P" if n == "perf_ori" else n for n in table.column_names]), path)
    with pytest.raises(DataError, match=r"tasks=4/part-0.parquet: missing column\(s\) perf_ori"):
        read_cloudperftrace(dataset)
    assert len(read_cloudperftrace(dataset, tasks=[4], schema={"target": "P"})) == 3
    with pytest.raises(ConfigError, match="unknown key"):
        CloudPerfTraceSchema.from_params({"targets": "P"})


def test_wrong_metric_count_names_partition_and_column(dataset, runs):
    path = dataset / "tasks=5" / "part-0.parquet"
    task_runs = [r for r in runs if r.task == 5]
    short = _nested([r.metrics[:, 53:90] for r in task_runs])  # 37 perf counters instead of 38
    _rewrite(path, lin_self=short)
    with pytest.raises(
        DataError, match=r"tasks=5/part-0.parquet: column lin_self \(Linux perf counters, 38 per second\)"
    ):
        read_cloudperftrace(dataset)


def test_nan_and_bad_targets_name_partition_and_column(dataset, runs):
    path = dataset / "tasks=6" / "part-0.parquet"
    task_runs = [r for r in runs if r.task == 6]
    blocks = [r.metrics[:, 91:103].copy() for r in task_runs]
    blocks[1][2, 3] = np.nan
    _rewrite(path, td_self=_nested(blocks))
    with pytest.raises(DataError, match=r"tasks=6/part-0.parquet: column td_self .*NaN / inf in row 1"):
        read_cloudperftrace(dataset)
    _rewrite(path, td_self=_nested([r.metrics[:, 91:103] for r in task_runs]))
    assert len(read_cloudperftrace(dataset, tasks=[6])) == 3
    _rewrite(path, perf_ori=pa.array([0.5, 1.7, 0.9]))
    with pytest.raises(DataError, match=r"tasks=6/part-0.parquet: perf_ori = 1.7 at row 1 .* in \(0, 1\]"):
        read_cloudperftrace(dataset)
    _rewrite(path, perf_ori=pa.array([0.5, float("nan"), 0.9]))
    with pytest.raises(DataError, match=r"tasks=6/part-0.parquet: column perf_ori has NaN"):
        read_cloudperftrace(dataset)


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match="CloudPerfTrace directory not found"):
        read_cloudperftrace(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no hive partitions 'tasks=<id>/'"):
        read_cloudperftrace(tmp_path / "empty")
    (tmp_path / "empty" / "tasks=4").mkdir()
    with pytest.raises(DataError, match=r"partition tasks=4 holds no .parquet file"):
        read_cloudperftrace(tmp_path / "empty")


def test_normalizer_uses_training_seconds_only():
    train = [
        CloudRun(np.array([[0.0, 5.0], [2.0, 5.0]], np.float32), 0.5, 4, 1.0, "a"),
        CloudRun(np.array([[4.0, 5.0]], np.float32), 0.5, 4, 1.0, "b"),
    ]
    norm = MetricNormalizer(log_transform=False).fit(train)
    # metric 0 over the three training seconds: mean 2, population std sqrt(8/3); metric 1 constant
    np.testing.assert_allclose(norm.mean, [2.0, 5.0])
    np.testing.assert_allclose(norm.std, [np.sqrt(8 / 3), 1.0], rtol=1e-6)
    test_run = np.array([[100.0, 7.0]], np.float32)  # an unseen scale does not move the statistics
    np.testing.assert_allclose(norm.transform(test_run), [[98.0 / np.sqrt(8 / 3), 2.0]], rtol=1e-6)
    logged = MetricNormalizer(log_transform=True).fit(train)
    np.testing.assert_allclose(logged.mean[0], np.mean(np.log1p([0.0, 2.0, 4.0])), rtol=1e-6)
    restored = MetricNormalizer()
    restored.load_state_dict(logged.state_dict())
    np.testing.assert_array_equal(restored.transform(test_run), logged.transform(test_run))
