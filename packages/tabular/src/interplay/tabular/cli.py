"""``interplay-tabular`` console script (also ``interplay tabular ...``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplay.core.cli import run_domain_cli

# one sub-package per model family; importing it registers its models, datasets and tasks
FAMILIES = ("interplay.tabular.causal", "interplay.tabular.cloud", "interplay.tabular.icl")


def _load() -> None:
    import importlib
    import importlib.util

    import interplay.tabular.data
    import interplay.tabular.models  # noqa: F401  (registers the entries)

    for family in FAMILIES:
        if importlib.util.find_spec(family) is not None:
            importlib.import_module(family)


def _train(cfg: Any, registry: Any, **kwargs: Any) -> Any:
    """``train`` / ``reproduce`` runner: a dataset whose factory carries a ``runner`` (the treatment-effect
    datasets: one fit per IHDP replication) is trained by it; every other config by the engine."""
    runner = getattr(registry.datasets.get(cfg.data.name).factory, "runner", None)
    if runner is None:
        from interplay.core.train import train as runner
    return runner(cfg, registry, **kwargs)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-tabular") -> int:
    from interplay.tabular.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog, train=_train)
