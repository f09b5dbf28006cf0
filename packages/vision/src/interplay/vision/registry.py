"""Models, datasets and tasks of the vision domain (filled by the modules in models/ and data/)."""

from interplay.core.registry import DomainRegistry

REGISTRY = DomainRegistry("vision", configs_package="interplay.vision.configs")
