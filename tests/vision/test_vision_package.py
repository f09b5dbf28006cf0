"""interplay-vision: the package imports, its console script works, its registry is the domain's."""

from __future__ import annotations

import pytest

from interplay.vision import REGISTRY
from interplay.vision.cli import main


def test_registry_belongs_to_domain():
    assert REGISTRY.domain == "vision"
    assert REGISTRY.configs_package == "interplay.vision.configs"
    # generic core tasks are reachable from the domain
    import interplay.core.train  # noqa: F401  (registers the core tasks)

    assert "classification" in REGISTRY.tasks


@pytest.mark.parametrize("command", ["models", "datasets", "configs"])
def test_listing_commands(command, capsys):
    assert main([command]) == 0
    out = capsys.readouterr().out
    if command == "configs":
        from interplay.core.cli import available_configs

        names = available_configs(REGISTRY)
    else:
        names = getattr(REGISTRY, command).names()
    if names:
        assert all(name in out for name in names)
    else:
        assert f"{command if command != 'configs' else 'configs shipped with'}" in out and "vision" in out


def test_unknown_config_is_a_user_error(capsys):
    assert main(["train", "--config", "no-such-paper"]) == 2
    assert "unknown vision config 'no-such-paper'" in capsys.readouterr().err
