"""Error types for user mistakes.

Every error a user can cause (a missing file, a wrong column, an unknown model name, a bad
config value) is an :class:`InterplayError`, with a message that names the input and says what
was expected, so the command line can print it without a traceback.
"""

from __future__ import annotations


class InterplayError(Exception):
    """Base class of every error that reports a user mistake rather than a bug."""


class ConfigError(InterplayError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, missing value)."""


class UnknownNameError(InterplayError, KeyError):
    """A model, dataset or config name is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataError(InterplayError):
    """A data file is missing, unreadable or not in the expected format."""


class DownloadError(DataError):
    """A download failed (network, HTTP status, truncated transfer)."""


class ChecksumError(DownloadError):
    """Downloaded bytes do not match the expected sha256."""


class CheckpointError(InterplayError):
    """A checkpoint is missing, unreadable or does not match the model."""
