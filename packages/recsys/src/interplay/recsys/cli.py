"""``interplay-recsys`` console script (also ``interplay recsys ...``)."""

from __future__ import annotations

from collections.abc import Sequence

from interplay.core.cli import run_domain_cli


def _load() -> None:
    import interplay.recsys.data
    import interplay.recsys.models
    import interplay.recsys.ranking
    import interplay.recsys.tasks  # noqa: F401  (registers the entries)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-recsys") -> int:
    from interplay.recsys.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog)
