"""Errors a user can act on. Each carries one readable message; none is retried."""

from __future__ import annotations


class SluiceError(Exception):
    """A failure with a clear, user-facing message (bad input, bad configuration)."""

    retryable = False


class SourceNotFound(SluiceError):
    """The landed file does not exist."""


class SourceUnreadable(SluiceError):
    """The landed file exists but this principal may not read it (permissions, encryption key)."""


class BadFile(SluiceError):
    """The file cannot be read as the dataset's format (columns, encoding, delimiter...)."""


class UnknownDataset(SluiceError):
    """No registered dataset has this name or claims this key."""


class ValidationFailed(SluiceError):
    """Rows failed the dataset's checks in hard mode."""

    def __init__(self, message: str, *, rows_invalid: int = 0, quarantine_uri: str | None = None) -> None:
        super().__init__(message)
        self.rows_invalid = rows_invalid
        self.quarantine_uri = quarantine_uri


class ConfigurationError(SluiceError):
    """A setting is missing or wrong."""
