"""One exception hierarchy, rooted at :class:`OciPackerError`; one class per error kind."""

from __future__ import annotations

from typing import Any, Optional


class OciPackerError(Exception):
    """Any error of oci-packer. Attributes name what the error is about, when known."""

    kind: str = "internal"
    path: Optional[str] = None
    reference: Optional[str] = None
    digest: Optional[str] = None
    status: Optional[int] = None
    code: Optional[str] = None
    problems: list[dict[str, Any]] = []
    line: Optional[int] = None
    column: Optional[int] = None
    field: Optional[str] = None


class PackFileError(OciPackerError, ValueError):
    """The pack file is invalid; ``problems`` lists every problem (``line``, ``column`` and
    ``field`` are those of the first)."""


class InvalidReferenceError(OciPackerError, ValueError):
    """A reference (target or image source) cannot be parsed."""


class InvalidArgumentError(OciPackerError, ValueError):
    """An argument or option has an invalid value."""


class SourceNotFoundError(OciPackerError, FileNotFoundError):
    """A source (file, directory, URL) does not exist or cannot be read."""


class AuthenticationError(OciPackerError, PermissionError):
    """Authentication is required or was refused."""


class NotFoundError(OciPackerError, LookupError):
    """A tag, digest or blob is not in the registry or layout."""


class DigestMismatchError(OciPackerError):
    """Content does not match its expected digest or size."""


class RegistryError(OciPackerError):
    """A registry answered with an error; ``status`` and ``code`` say which."""


class NetworkError(OciPackerError, ConnectionError):
    """A connection failed or timed out."""


class IOError_(OciPackerError, OSError):
    """A local file-system operation failed (exported as ``oci_packer.IOError``)."""


class UnsupportedError(OciPackerError, NotImplementedError):
    """A feature is not available (in this build, or on this registry or layout)."""


class CancelledError(OciPackerError):
    """The operation was cancelled."""


class InternalError(OciPackerError, RuntimeError):
    """A bug in oci-packer: please report it."""


__all__ = [
    "AuthenticationError",
    "CancelledError",
    "DigestMismatchError",
    "IOError_",
    "InternalError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "NetworkError",
    "NotFoundError",
    "OciPackerError",
    "PackFileError",
    "RegistryError",
    "SourceNotFoundError",
    "UnsupportedError",
]
