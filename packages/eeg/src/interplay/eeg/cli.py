"""``interplay-eeg`` console script (also ``interplay eeg ...``).

The core sub-commands, with ``train`` and ``reproduce`` running
:func:`interplay.eeg.evaluation.cross_validate`: one fit per fold of the configured protocol
(``data.params.protocol``), one run directory whose ``metrics.json`` holds the mean and standard
deviation over folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplay.core.cli import run_domain_cli


def _load() -> None:
    import interplay.eeg.data.datasets
    import interplay.eeg.models
    import interplay.eeg.tasks  # noqa: F401  (registers the entries)


def _cross_validate(cfg: Any, registry: Any, **kwargs: Any) -> Any:
    from interplay.eeg.evaluation import cross_validate

    return cross_validate(cfg, registry, **kwargs)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-eeg") -> int:
    from interplay.eeg.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog, train=_cross_validate)
