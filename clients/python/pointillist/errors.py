"""Exceptions of the pointillist client and the one mapping from gRPC errors to them.

The server ends failed RPCs with a rich status (``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer, made with grpcio-status). :func:`error_from_rpc` reads it for
sync and asyncio calls alike and picks the exception class by status code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "CancelledError",
    "DeadlineExceededError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "PointillistError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_rpc",
    "error_from_status",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_M = TypeVar("_M", bound=Message)

# Every google.rpc detail type, by full name, so that any of them is unpacked, not only the three
# the server sends today. Unknown types stay as the packed Any.
_DETAIL_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        error_details_pb2.ErrorInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RequestInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
        error_details_pb2.DebugInfo,
    )
}


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field (``parameters.width``) and what is wrong with it."""

    field: str
    description: str


class PointillistError(Exception):
    """An RPC to a pointillist server failed.

    Attributes:
        code: the gRPC status code.
        message: the status message from the server (or from gRPC for transport errors).
        details: the unpacked ``google.rpc`` detail messages (BadRequest, RetryInfo, ErrorInfo...);
            details of unknown types are kept as ``google.protobuf.Any``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        details: list[Message] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: list[Message] = list(details or [])

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def detail(self, kind: type[_M]) -> _M | None:
        """The first detail message of type ``kind`` (e.g. ``ErrorInfo``), or None."""
        return next((d for d in self.details if isinstance(d, kind)), None)

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The ``google.rpc.ErrorInfo`` detail (reason, domain, metadata), when sent."""
        return self.detail(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str | None:
        """``ErrorInfo.reason``, a stable machine-readable cause, when sent."""
        info = self.error_info
        return info.reason if info is not None else None


class _RetryableError(PointillistError):
    """A failure the caller may retry, after ``retry_after_s`` when the server says so."""

    @property
    def retry_after_s(self) -> float | None:
        """The delay from ``google.rpc.RetryInfo``, in seconds; None when not sent."""
        info = self.detail(error_details_pb2.RetryInfo)
        if info is None or not info.HasField("retry_delay"):
            return None
        return info.retry_delay.ToTimedelta().total_seconds()


class InvalidArgumentError(PointillistError):
    """The request was invalid (INVALID_ARGUMENT); ``field_violations`` says which fields."""

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Every field violation of the ``google.rpc.BadRequest`` details, in order."""
        return [
            FieldViolation(field=violation.field, description=violation.description)
            for detail in self.details
            if isinstance(detail, error_details_pb2.BadRequest)
            for violation in detail.field_violations
        ]


class NotFoundError(PointillistError):
    """An unknown model or job (NOT_FOUND)."""


class ResourceExhaustedError(_RetryableError):
    """The queue or a quota is full (RESOURCE_EXHAUSTED); retry after ``retry_after_s``."""


class UnavailableError(_RetryableError):
    """The server cannot be reached, is warming up or draining (UNAVAILABLE)."""


class DeadlineExceededError(PointillistError):
    """The deadline passed before the RPC finished (DEADLINE_EXCEEDED)."""


class CancelledError(PointillistError):
    """The RPC was cancelled (CANCELLED)."""


class UnauthenticatedError(PointillistError):
    """Missing or invalid credentials (UNAUTHENTICATED)."""


class PermissionDeniedError(PointillistError):
    """The caller may not do this (PERMISSION_DENIED)."""


class InternalError(PointillistError):
    """A server bug, or a server that broke the protocol (INTERNAL)."""


_CLASS_BY_CODE: dict[grpc.StatusCode, type[PointillistError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.INTERNAL: InternalError,
}


_STATUS_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
"""gRPC status codes by number, for statuses carried in messages."""


def error_class(code: grpc.StatusCode) -> type[PointillistError]:
    """The exception class for a status code (PointillistError for the unmapped ones)."""
    return _CLASS_BY_CODE.get(code, PointillistError)


def error_from_rpc(err: grpc.RpcError) -> PointillistError:
    """Turn a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``) into a PointillistError.

    Reads the code, the message and the ``google.rpc.Status`` in the ``grpc-status-details-bin``
    trailer, and unpacks its details. A missing or unreadable rich status leaves ``details`` empty.
    """
    code = _call_value(err, "code") or grpc.StatusCode.UNKNOWN
    text = _call_value(err, "details") or ""
    rich = _rich_status(_call_value(err, "trailing_metadata"))
    if rich is not None and not text:
        text = rich.message
    details = [_unpack(detail) for detail in rich.details] if rich is not None else []
    return error_class(code)(text or code.name, code=code, details=details)


def error_from_status(status: status_pb2.Status) -> PointillistError:
    """Turn a ``google.rpc.Status`` carried in a message (a failed job's ``error``) into the
    PointillistError a call ending with that status raises."""
    code = _STATUS_CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    details = [_unpack(detail) for detail in status.details]
    return error_class(code)(status.message or code.name, code=code, details=details)


def _call_value(err: grpc.RpcError, name: str) -> Any:
    # Both grpc.Call errors (sync) and AioRpcError expose code(), details() and
    # trailing_metadata() as plain methods; a bare RpcError has none of them.
    method = getattr(err, name, None)
    return method() if callable(method) else None


def _rich_status(trailing_metadata: Any) -> status_pb2.Status | None:
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _unpack(packed: any_pb2.Any) -> Message:
    kind = _DETAIL_TYPES.get(packed.TypeName())
    if kind is None:
        return packed
    detail = kind()
    return detail if packed.Unpack(detail) else packed
