"""Models, datasets and tasks of the eeg domain (filled by the modules in models/ and data/)."""

from interplay.core.registry import DomainRegistry

REGISTRY = DomainRegistry("eeg", configs_package="interplay.eeg.configs")
