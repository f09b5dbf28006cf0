"""``interplay-bio`` console script (also ``interplay bio ...``).

The core sub-commands. ``train`` and ``reproduce`` hand a config to its task's runner: survival
configs (task ``survival``) run the 5-fold cross-validation of
:func:`interplay.bio.evaluation.cross_validate` (one fit per fold and selection rule, see
``evaluation.selection``; one run directory whose ``metrics.json`` holds the mean and standard
deviation over folds and whose ``plots/km_test.png`` shows the Kaplan-Meier curves of the risk
groups), drug-sensitivity configs :func:`interplay.bio.drug.task.run_drug_experiment`, the others
the engine's single fit::

    interplay-bio train --config snn-blca-genomic data.root=../shared/data/bio
    interplay-bio train --config motcat-blca data.root=DIR data.params.bags=DIR/pt_files
    interplay-bio reproduce motcat data.root=DIR data.params.bags=DIR/pt_files
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from typing import Any

from interplay.core.cli import run_domain_cli

# modules that register models, datasets and tasks on import (absent ones are skipped: the package
# grows in parts)
_ENTRY_MODULES = (
    "interplay.bio.models.motcat",
    "interplay.bio.models.survival_baselines",
    "interplay.bio.drug",
    "interplay.bio.ppi",
)
# task name -> "module:function" of the runner that trains a config of that task; the others train
# once with the engine (interplay.core.train.train)
_RUNNERS = {
    "survival": "interplay.bio.evaluation:cross_validate",  # 5-fold protocol, honest / reference selection
    "drug_regression": "interplay.bio.drug.task:run_drug_experiment",  # LightGBM outside Lightning
}


def _load() -> None:
    import interplay.bio.data.datasets
    import interplay.bio.models
    import interplay.bio.tasks  # noqa: F401  (registers the entries)

    for name in _ENTRY_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    from interplay.bio.evaluation import register_cox

    register_cox()  # after the model modules, so that their own "cox" entry wins


def _train(cfg: Any, registry: Any, **kwargs: Any) -> Any:
    """Train ``cfg`` with its task's runner (:data:`_RUNNERS`), else once with the engine."""
    target = _RUNNERS.get(cfg.task.name)
    if target is None:
        from interplay.core.train import train

        return train(cfg, registry, **kwargs)
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(cfg, registry, **kwargs)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-bio") -> int:
    from interplay.bio.registry import REGISTRY

    return run_domain_cli(REGISTRY, argv, prog=prog, load=_load, train=_train)
