"""Models, datasets and tasks of the recsys domain (filled by the modules in models/ and data/)."""

from interplay.core.registry import DomainRegistry

REGISTRY = DomainRegistry("recsys", configs_package="interplay.recsys.configs")
