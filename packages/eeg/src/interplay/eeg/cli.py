"""``interplay-eeg`` console script (also ``interplay eeg ...``)."""

from __future__ import annotations

from collections.abc import Sequence

from interplay.core.cli import run_domain_cli


def _load() -> None:
    import interplay.eeg.data
    import interplay.eeg.models  # noqa: F401  (registers the entries)


def main(argv: Sequence[str] | None = None, prog: str = "interplay-eeg") -> int:
    from interplay.eeg.registry import REGISTRY

    _load()
    return run_domain_cli(REGISTRY, argv, prog=prog)
