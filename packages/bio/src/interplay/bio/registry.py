"""Models, datasets and tasks of the bio domain (filled by the modules in models/ and data/)."""

from interplay.core.registry import DomainRegistry

REGISTRY = DomainRegistry("bio", configs_package="interplay.bio.configs")
