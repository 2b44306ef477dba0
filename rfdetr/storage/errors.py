"""Exceptions of :mod:`rfdetr.storage`; every message is one line naming the URI or file."""

from __future__ import annotations

from rfdetr.errors import EXIT_BAD_INPUT, EXIT_FAILED, UserError


class StorageError(UserError, RuntimeError):
    """Base of every object-store error; exit code 1 (the store failed) unless bad input."""

    exit_code = EXIT_FAILED


class InvalidURIError(StorageError, ValueError):
    """A malformed ``s3://`` / ``minio://`` URI (bad input: CLIs exit with code 2)."""

    exit_code = EXIT_BAD_INPUT


class StorageConfigError(StorageError):
    """The endpoint or the credentials are missing or invalid in the environment."""

    exit_code = EXIT_BAD_INPUT


class StorageUnavailableError(StorageError):
    """The endpoint cannot be reached (refused, timed out, DNS)."""


class StorageServerError(StorageError):
    """The endpoint answered, with HTTP 5xx on every retry (a full disk, a crashed volume)."""


class StorageAuthError(StorageError):
    """The server rejected the credentials or the request."""


class BucketNotFoundError(StorageError):
    """The bucket named in the URI does not exist."""


class ObjectNotFoundError(StorageError):
    """No object (or no object under a prefix) at the URI."""


class UnsafeKeyError(StorageError):
    """An object key that would escape the download folder (``..``, absolute, empty segments)."""


class IntegrityError(StorageError):
    """Size, ETag, sha256 or manifest mismatch: the bytes are not what was written."""


class PreconditionFailedError(StorageError):
    """A conditional write was refused: the object exists (create) or changed (compare-and-swap)."""
