"""One exception hierarchy, rooted at :class:`OciPackerError`; one class per error kind."""

from __future__ import annotations

from typing import Any, Optional


class OciPackerError(Exception):
    """Any error of oci-packer. Attributes name what the error is about, when known; they
    are constructor arguments, so an error survives ``pickle`` (and ``multiprocessing``)."""

    kind: str = "internal"

    def __init__(
        self,
        message: str = "",
        *,
        kind: Optional[str] = None,
        path: Optional[str] = None,
        reference: Optional[str] = None,
        digest: Optional[str] = None,
        status: Optional[int] = None,
        code: Optional[str] = None,
        problems: Optional[list[dict[str, Any]]] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        field: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.path = path
        self.reference = reference
        self.digest = digest
        #: The HTTP status of the registry answer the error is about.
        self.status = status
        #: The registry's error code (``UNAUTHORIZED``, ``MANIFEST_UNKNOWN``, ...).
        self.code = code
        self.problems: list[dict[str, Any]] = list(problems or [])
        self.line = line
        self.column = column
        self.field = field

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "reference": self.reference,
            "digest": self.digest,
            "status": self.status,
            "code": self.code,
            "problems": self.problems,
            "line": self.line,
            "column": self.column,
            "field": self.field,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._fields()))


def _rebuild(cls: type[OciPackerError], message: str, fields: dict[str, Any]) -> OciPackerError:
    """Unpickles an error: its class called with its message and fields."""
    return cls(message, **fields)


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


class OciIOError(OciPackerError, OSError):
    """A local file-system operation failed."""


#: Deprecated name of :class:`OciIOError`.
IOError_ = OciIOError


class UnsupportedError(OciPackerError, NotImplementedError):
    """A feature is not available (in this build, or on this registry or layout)."""


class CancelledError(OciPackerError):
    """The operation was cancelled."""


class UnsafeContentError(OciPackerError, ValueError):
    """Content unsafe to write: an archive entry or title that would land outside the
    destination, or an archive past a size or entry limit. Nothing was left written."""


class InternalError(OciPackerError, RuntimeError):
    """A bug in oci-packer: please report it."""


__all__ = [
    "AuthenticationError",
    "CancelledError",
    "DigestMismatchError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "NetworkError",
    "NotFoundError",
    "OciIOError",
    "OciPackerError",
    "PackFileError",
    "RegistryError",
    "SourceNotFoundError",
    "UnsafeContentError",
    "UnsupportedError",
]
