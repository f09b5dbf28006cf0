"""Models, datasets and tasks of the tabular domain (filled by the modules in models/ and data/)."""

from interplay.core.registry import DomainRegistry

REGISTRY = DomainRegistry("tabular", configs_package="interplay.tabular.configs")
