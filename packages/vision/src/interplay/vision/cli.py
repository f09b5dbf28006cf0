"""``interplay-vision`` console script (also ``interplay vision ...``)."""

from __future__ import annotations

from collections.abc import Sequence

from interplay.core.cli import run_domain_cli


def _load() -> None:
    import interplay.vision.data
    import interplay.vision.models  # noqa: F401  (registers the entries)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-vision") -> int:
    from interplay.vision.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog)
