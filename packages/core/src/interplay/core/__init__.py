"""Interplay core: attention primitives, nn blocks, training engine, configs, CLI and data helpers."""

from interplay.core.errors import (
    ChecksumError,
    ConfigError,
    DataError,
    DownloadError,
    InterplayError,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "InterplayError",
    "UnknownNameError",
    "__version__",
]
