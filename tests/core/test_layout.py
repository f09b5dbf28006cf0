"""Package layout: every domain imports cleanly, depends on core only, never on another domain."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from interplay.core.datamodules import stratified_split
from interplay.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ["recsys", "eeg", "bio", "vision", "tabular"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_imports_and_depends_on_core(domain):
    module = importlib.import_module(f"interplay.{domain}")
    assert module.REGISTRY.domain == domain
    requires = importlib.metadata.requires(f"interplay-{domain}") or []
    assert any(r.startswith("interplay-core") for r in requires)
    assert (ROOT / "packages" / domain / "README.md").is_file()


@pytest.mark.parametrize("domain", ["core", *DOMAINS])
def test_no_cross_domain_imports(domain):
    src = ROOT / "packages" / domain / "src" / "interplay"
    assert not (src / "__init__.py").exists(), "interplay must stay a PEP 420 namespace package"
    allowed = {"core", domain}
    for path in (src / domain).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "interplay" and len(parts) > 1:
                    assert parts[1] in allowed, f"{path} imports {name}"


def test_stratified_split_is_disjoint_complete_and_stratified():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    splits = stratified_split(labels, 0.1, 0.2, seed=3)
    joined = np.concatenate(list(splits.values()))
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    for cls, count in enumerate([100, 50, 30, 20]):
        assert (labels[splits["test"]] == cls).sum() == round(0.2 * count)
        assert (labels[splits["val"]] == cls).sum() == round(0.1 * count)
    again = stratified_split(labels, 0.1, 0.2, seed=3)
    other = stratified_split(labels, 0.1, 0.2, seed=4)
    assert all((splits[s] == again[s]).all() for s in splits)
    assert not (splits["test"] == other["test"]).all()
    with pytest.raises(ConfigError, match="sum to less than 1"):
        stratified_split(labels, 0.5, 0.5, seed=0)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("command", ["models", "datasets", "configs"])
def test_domain_listing_commands(domain, command, capsys):
    from interplay.core.cli import available_configs

    module = importlib.import_module(f"interplay.{domain}.cli")
    registry = importlib.import_module(f"interplay.{domain}").REGISTRY
    assert module.main([command]) == 0
    out = capsys.readouterr().out
    names = available_configs(registry) if command == "configs" else getattr(registry, command).names()
    if names:
        assert all(name in out for name in names)
    else:
        assert domain in out and ("registered" in out or "shipped" in out)


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_unknown_config_is_a_user_error(domain, capsys):
    module = importlib.import_module(f"interplay.{domain}.cli")
    assert module.main(["train", "--config", "no-such-paper"]) == 2
    assert f"unknown {domain} config 'no-such-paper'" in capsys.readouterr().err


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_reaches_core_tasks(domain):
    import interplay.core.train  # noqa: F401  (registers the core tasks)

    registry = importlib.import_module(f"interplay.{domain}").REGISTRY
    assert "classification" in registry.tasks and registry.configs_package == f"interplay.{domain}.configs"


def test_test_module_basenames_are_unique():
    """pytest's default (prepend) import mode fails collection when two test files share a basename."""
    root = Path(__file__).resolve().parents[1]
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(root.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(root)} and {path.relative_to(root)}")
        seen[path.name] = path
    assert not clashes, "test modules share a basename: " + "; ".join(clashes)
