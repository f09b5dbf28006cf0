"""Command lines: one console script per domain and the ``interplay`` umbrella.

Every domain gets the same sub-commands, built here from its :class:`DomainRegistry`::

    interplay-<domain> train --config NAME|FILE [key.sub=value ...]
    interplay-<domain> evaluate --checkpoint FILE [--split val|test]
    interplay-<domain> predict --checkpoint FILE --output preds.csv
    interplay-<domain> reproduce PAPER
    interplay-<domain> models | datasets | configs
    interplay-<domain> download DATASET

``interplay <domain> ...`` dispatches to the domain's command through the ``interplay.domains``
entry-point group. User mistakes (:class:`InterplayError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from interplay.core.errors import ConfigError, InterplayError, UnknownNameError
from interplay.core.registry import DomainRegistry

EXIT_USER_ERROR = 2


# -- configs --------------------------------------------------------------------------------------
def available_configs(registry: DomainRegistry) -> list[str]:
    try:
        files = importlib.resources.files(registry.configs_package)
    except ModuleNotFoundError:
        return []
    return sorted(f.name[: -len(".yaml")] for f in files.iterdir() if f.name.endswith(".yaml"))


def resolve_config(registry: DomainRegistry, name_or_path: str) -> Path:
    """A config file path from a path on disk or the name of a config shipped with the domain."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not path.is_file():
            raise UnknownNameError(f"config file not found: {path}")
        return path
    names = available_configs(registry)
    if name_or_path not in names:
        import difflib

        close = difflib.get_close_matches(name_or_path, names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(
            f"unknown {registry.domain} config '{name_or_path}'{hint} (known: {', '.join(names) or 'none'})"
        )
    return Path(str(importlib.resources.files(registry.configs_package) / f"{name_or_path}.yaml"))


def load_experiment(registry: DomainRegistry, name_or_path: str, overrides: Sequence[str] = ()):
    from interplay.core.config import load_config
    from interplay.core.train.config import ExperimentConfig

    return load_config(ExperimentConfig, resolve_config(registry, name_or_path), list(overrides))


# -- output -----------------------------------------------------------------------------------------
def format_table(rows: list[Sequence[Any]], header: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "-" if v is None else str(v)

    cells = [[cell(v) for v in row] for row in [list(header), *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_predictions(outputs: dict[str, Any], path: str | os.PathLike) -> Path:
    """Per-example outputs as CSV: 1-D tensors become one column, 2-D tensors one column each."""
    import csv

    from interplay.core.data import atomic_write

    columns: list[tuple[str, Any]] = []
    for key, value in outputs.items():
        value = value.detach().cpu()
        if value.dim() == 1:
            columns.append((key, value.tolist()))
        else:
            flat = value.reshape(value.shape[0], -1)
            columns.extend((f"{key}_{j}", flat[:, j].tolist()) for j in range(flat.shape[1]))
    n = len(columns[0][1]) if columns else 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *[c for c, _ in columns]])
        for i in range(n):
            writer.writerow([i, *[vals[i] for _, vals in columns]])
    return path


# -- sub-commands -------------------------------------------------------------------------------------
def _train_function(args: argparse.Namespace) -> Callable[..., Any]:
    """The domain's own runner when it supplied one (e.g. EEG's cross-validation), else the engine's."""
    from interplay.core.train import train

    return getattr(args, "train", None) or train


def _cmd_train(registry: DomainRegistry, args: argparse.Namespace) -> int:
    train = _train_function(args)

    overrides = list(args.overrides)
    if args.run_root:
        overrides.append(f"run_root={args.run_root}")
    if args.config:
        cfg = load_experiment(registry, args.config, overrides)
    elif args.resume:
        from interplay.core.train.engine import experiment_from_checkpoint

        cfg, _ = experiment_from_checkpoint(args.resume, overrides)
    else:
        raise ConfigError("train needs --config NAME|FILE (or --resume CKPT to continue a run)")
    result = train(cfg, registry, resume_from=args.resume)
    if result.is_global_zero:
        _print_run(result)
    return 0


def _print_run(result) -> None:
    m = result.metrics
    rows = [[f"best {m['monitor']}", m["best_val"]]]
    rows += [[k, v] for k, v in sorted(m.get("test", {}).items())]
    rows += [["epochs", m["epochs"]], ["fit seconds", m["fit_seconds"]]]
    print(format_table(rows, ["metric", "value"]))
    print(f"run directory: {result.run_dir}")
    if result.best_checkpoint:
        print(f"best checkpoint: {result.best_checkpoint}")


def _cmd_evaluate(registry: DomainRegistry, args: argparse.Namespace) -> int:
    from interplay.core.train import evaluate
    from interplay.core.train.runs import write_json

    metrics = evaluate(args.checkpoint, registry, split=args.split, overrides=list(args.overrides))
    print(format_table(sorted(metrics.items()), ["metric", "value"]))
    if args.output:
        write_json(args.output, metrics)
        print(f"metrics written to {args.output}")
    return 0


def _cmd_predict(registry: DomainRegistry, args: argparse.Namespace) -> int:
    from interplay.core.train import predict

    outputs = predict(args.checkpoint, registry, split=args.split, overrides=list(args.overrides))
    path = write_predictions(outputs, args.output)
    n = len(next(iter(outputs.values()))) if outputs else 0
    print(f"{n} predictions written to {path}")
    return 0


def _cmd_reproduce(registry: DomainRegistry, args: argparse.Namespace) -> int:
    """Train the paper's config (over ``reproduce_seeds``), and its ``baselines`` on the same seeds;
    compare the mean of every ``reported`` metric with the paper's figure (reached when
    ``ours >= paper - tolerance``) and check each ``must_beat`` claim (ours' mean > the baseline's).
    For metrics listed in ``lower_is_better`` both comparisons flip (``ours <= paper + tolerance``,
    ours' mean < the baseline's) and the table marks the metric ``(lower is better)``."""
    import statistics

    from interplay.core.train.runs import write_json

    train = _train_function(args)

    overrides = list(args.overrides)
    if args.run_root:
        overrides.append(f"run_root={args.run_root}")
    cfg = load_experiment(registry, args.paper, overrides)
    if not cfg.reported and not cfg.must_beat:
        raise UnknownNameError(
            f"config '{args.paper}' has no 'reported' figures or 'must_beat' claims to reproduce"
        )
    seeds = list(cfg.reproduce_seeds) or [cfg.seed]
    labels = ["ours", *cfg.baselines]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    run_dirs = []
    for seed in seeds:
        for label in labels:
            extra = [] if label == "ours" else list(cfg.baselines[label])
            run_cfg = load_experiment(registry, args.paper, [*overrides, *extra, f"seed={seed}"])
            result = train(run_cfg, registry)
            metrics = {**result.metrics.get("last_val", {}), **result.metrics.get("test", {})}
            metrics[f"best {run_cfg.trainer.monitor}"] = result.metrics.get("best_val")
            runs[label].append({k: v for k, v in metrics.items() if v is not None})
            if label == "ours":
                run_dirs.append(result.run_dir)

    def mean(label: str, metric: str) -> float | None:
        values = [m[metric] for m in runs[label] if metric in m]
        return statistics.fmean(values) if values else None

    def spread(label: str, metric: str) -> str:
        values = [m[metric] for m in runs[label] if metric in m]
        if not values:
            return "-"
        sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.4f}{sd}"

    baselines = list(cfg.baselines)
    rows, report = [], {}
    for metric in dict.fromkeys([*cfg.reported, *cfg.must_beat]):
        paper, value = cfg.reported.get(metric), mean("ours", metric)
        tol = cfg.tolerance.get(metric)
        lower = metric in cfg.lower_is_better
        reached = None
        if value is not None and paper is not None and tol is not None:
            reached = value <= paper + tol if lower else value >= paper - tol
        beaten = {
            b: (
                value is not None
                and (m := mean(b, metric)) is not None
                and (value < m if lower else value > m)
            )
            for b in cfg.must_beat.get(metric, [])
        }
        checks = [c for c in (reached, *beaten.values()) if c is not None]
        ok = None if not checks else all(checks)
        rows.append(
            [
                f"{metric} (lower is better)" if lower else metric,
                paper,
                spread("ours", metric),
                *[spread(b, metric) for b in baselines],
                "-" if ok is None else ("yes" if ok else "NO"),
            ]
        )
        report[metric] = {
            "paper": paper,
            "ours": value,
            "tolerance": tol,
            "lower_is_better": lower,
            "reached": reached,
            "beats": beaten,
            "baselines": {b: mean(b, metric) for b in baselines},
            "ok": ok,
        }
    print(f"\n{cfg.paper or args.paper}" + (f" (seeds {seeds})" if len(seeds) > 1 else ""))
    print(format_table(rows, ["metric", "paper", "ours", *baselines, "reached"]))
    print(f"run directory: {run_dirs[0]}")
    write_json(
        run_dirs[0] / "reproduction.json",
        {
            "config": args.paper,
            "seeds": seeds,
            "metrics": report,
            "runs": runs,
            "run_dirs": [str(d) for d in run_dirs],
        },
    )
    return 0 if all(r["ok"] is not False for r in report.values()) or not args.strict else 1


def _cmd_list(registry: DomainRegistry, args: argparse.Namespace) -> int:
    if args.command == "configs":
        names = available_configs(registry)
        print("\n".join(names) if names else f"no configs shipped with {registry.domain} yet")
    else:
        print(getattr(registry, args.command).table())
    return 0


def _cmd_download(registry: DomainRegistry, args: argparse.Namespace) -> int:
    entry = registry.datasets.get(args.dataset)
    download = getattr(entry.factory, "download", None)
    if download is None:
        print(f"{args.dataset}: no download step (see its description: {entry.description})")
        return 0
    result = download(args.root)
    print(result if isinstance(result, str) else f"{args.dataset} ready at {result}")
    return 0


def build_parser(registry: DomainRegistry, prog: str | None = None) -> argparse.ArgumentParser:
    domain = registry.domain
    parser = argparse.ArgumentParser(
        prog=prog or f"interplay-{domain}",
        description=f"Interplay {domain}: train, evaluate and reproduce models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    overrides_help = "config overrides as key.sub=value (e.g. trainer.max_epochs=5 data.batch_size=32)"

    p = sub.add_parser(
        "train",
        help="train a model from a config",
        description="Train a model from a config; "
        "select on validation, score the test split once, write runs/<domain>/<model>/<time>/.",
    )
    p.add_argument("--config", "-c", help="shipped config name (see 'configs') or a YAML file")
    p.add_argument(
        "--resume",
        metavar="CKPT",
        help="resume from this checkpoint (e.g. .../last.ckpt); without --config its stored config is used",
    )
    p.add_argument("--run-root", help="directory that holds run directories (default: ./runs)")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on the validation or test split")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by train")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", help="write per-example predictions of a checkpoint to CSV")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by train")
    p.add_argument("--output", required=True, help="CSV file to write")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("reproduce", help="run a paper's config and compare with its reported figures")
    p.add_argument("paper", help="config name of the reproduction (see 'configs')")
    p.add_argument("--run-root", help="directory that holds run directories (default: ./runs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a figure falls short of the paper")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(handler=_cmd_reproduce)

    for name, text in (
        ("models", "list the registered models"),
        ("datasets", "list the registered datasets"),
        ("configs", "list the shipped configs"),
    ):
        sub.add_parser(name, help=text, description=text).set_defaults(handler=_cmd_list)

    p = sub.add_parser("download", help="download a dataset into the data root ($INTERPLAY_DATA)")
    p.add_argument("dataset", help="dataset name (see 'datasets')")
    p.add_argument("--root", help="data root (default: $INTERPLAY_DATA or ~/.cache/interplay)")
    p.set_defaults(handler=_cmd_download)
    return parser


def run_domain_cli(
    registry: DomainRegistry,
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    load: Callable[[], Any] | None = None,
    train: Callable[..., Any] | None = None,
) -> int:
    """Parse ``argv`` and run the sub-command; user errors print one line and return 2.

    ``train`` replaces :func:`interplay.core.train.train` in ``train`` and ``reproduce`` for domains
    whose runs are more than one fit (it takes ``(cfg, registry, resume_from=...)`` and returns a
    :class:`~interplay.core.train.RunResult`).
    """
    parser = build_parser(registry, prog)
    # overrides may come before or after options (argparse cannot interleave a nargs="*" positional)
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if "=" not in a or a.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    args.train = train
    try:
        if load is not None:
            load()
        return args.handler(registry, args)
    except InterplayError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def core_main(argv: Sequence[str] | None = None, prog: str = "interplay-core") -> int:
    from interplay.core.demo import REGISTRY

    return run_domain_cli(REGISTRY, argv, prog=prog)


def _domains() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="interplay.domains")}


def umbrella_main(argv: Sequence[str] | None = None) -> int:
    """``interplay <domain> ...``: dispatch to the domain's console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    domains = _domains()
    usage = (
        "usage: interplay DOMAIN COMMAND [...]\n\n"
        "Interplay: attention models for interactions.\n\ndomains:\n"
        + "\n".join(f"  {name}" for name in sorted(domains))
        + "\n\nRun 'interplay DOMAIN --help' for a domain's commands."
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    name = argv[0]
    if name not in domains:
        print(f"error: unknown domain '{name}' (installed: {', '.join(sorted(domains))})", file=sys.stderr)
        return EXIT_USER_ERROR
    main = domains[name].load()
    return main(argv[1:], prog=f"interplay {name}")
