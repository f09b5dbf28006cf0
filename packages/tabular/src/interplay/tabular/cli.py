"""``interplay-tabular`` console script (also ``interplay tabular ...``)."""

from __future__ import annotations

from collections.abc import Sequence

from interplay.core.cli import run_domain_cli


def _load() -> None:
    import interplay.tabular.data
    import interplay.tabular.models  # noqa: F401  (registers the entries)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-tabular") -> int:
    from interplay.tabular.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog)
