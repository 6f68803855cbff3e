"""Typed errors of the lugha contract.

Every error names what is wrong (a field path, a file, a graph, a language) in its message, so a user
reading one line on a Raspberry Pi knows what to fix.
"""
from __future__ import annotations


class LughaError(Exception):
    """Base class of every error lugha raises on purpose."""


class ConfigError(LughaError, ValueError):
    """A config, spec or manifest field has a bad type or value. ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class UnknownModelError(LughaError, KeyError):
    """A model config name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class BundleError(LughaError):
    """A bundle that cannot be trusted: bad schema version, missing file, checksum mismatch, path escape."""


class SchemaVersionError(BundleError):
    """The manifest's schema version is not one this lugha can read."""


class ChecksumError(BundleError):
    """A bundle file's size or SHA-256 differs from the manifest."""


class MissingFileError(BundleError):
    """A file listed in the manifest is not in the bundle folder."""


class UnsafePathError(BundleError):
    """A manifest path that is absolute or leaves the bundle folder."""


class DataError(LughaError):
    """A dataset manifest or record that cannot be used."""


class MissingDependencyError(LughaError, ImportError):
    """An optional package or system resource is absent; the message says how to install it."""
