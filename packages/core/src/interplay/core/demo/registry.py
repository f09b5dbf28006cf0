"""Registry of core's own reference models and datasets (the engine's vertical slice)."""

from interplay.core.registry import DomainRegistry

REGISTRY = DomainRegistry("core", configs_package="interplay.core.demo.configs")
