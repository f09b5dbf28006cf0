"""``interplay-bio`` console script (also ``interplay bio ...``)."""

from __future__ import annotations

from collections.abc import Sequence

from interplay.core.cli import run_domain_cli


def _load() -> None:
    import interplay.bio.data
    import interplay.bio.models  # noqa: F401  (registers the entries)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-bio") -> int:
    from interplay.bio.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog)
