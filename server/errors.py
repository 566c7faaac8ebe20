"""The one place where errors become gRPC statuses, with google.rpc details."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from scheduler.errors import (
    CallerLimitError,
    JobCancelledError,
    JobDeadlineError,
    JobFailedError,
    JobOutOfMemoryError,
    JobServerLostError,
    NotServingError,
    QueueFullError,
    ReplicaCrashedError,
    ReplicaHungError,
    UnknownJobError,
    UnknownModelError,
)
from server.output_store import OutputStoreError
from server.validation import InvalidRequestError, RequestTooLargeError

log = logging.getLogger("pointillist.server")

ERROR_DOMAIN = "pointillist.v1"
PUSHBACK_KEY = "grpc-retry-pushback-ms"
# The longest RetryInfo delay a client library waits out by itself before it retries a refusal.
MAX_PUSHBACK_S = 10.0


def status_for(exc: BaseException) -> grpc.Status:
    """The gRPC status (code, message, details) that reports ``exc`` to a caller."""
    return rpc_status.to_status(rich_status(exc))


def rich_status(exc: BaseException) -> status_pb2.Status:
    """``exc`` as a ``google.rpc.Status``: what ``status_for`` sends, as a message (GetJob
    reports a finished job's error with it)."""
    code, message, details = _describe(exc)
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code, message=message, details=packed)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status for ``exc``, and the retry pushback gRPC clients obey."""
    status = status_for(exc)
    pushback = retry_pushback_ms(exc, status.code)
    if pushback is not None:
        metadata = (*(status.trailing_metadata or ()), (PUSHBACK_KEY, str(pushback)))
        status = _Status(status.code, status.details, metadata)
    await context.abort_with_status(status)
    raise AssertionError("abort_with_status returned")  # it always raises


def retry_pushback_ms(exc: BaseException, code: grpc.StatusCode) -> int | None:
    """What ``grpc-retry-pushback-ms`` tells a client whose retry policy covers the status.

    A refusal that accepted nothing (a full queue, a caller limit, a server not serving) may be
    retried after its RetryInfo delay, when that delay is short; a longer one, and every other
    UNAVAILABLE or RESOURCE_EXHAUSTED (the job itself ran and failed, and the scheduler already
    retried it), says -1: do not retry, the caller decides. None: no trailer (other codes are
    never retried by the client's policy).
    """
    if isinstance(exc, QueueFullError | CallerLimitError | NotServingError):
        delay = exc.retry_after_s
        if delay is None:
            return None  # no estimate (a drain): the client's own backoff, to another server
        return max(0, int(delay * 1000)) if delay <= MAX_PUSHBACK_S else -1
    retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
    return -1 if code in retryable else None


class _Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _describe(exc: BaseException) -> tuple[int, str, list[Message]]:
    if isinstance(exc, InvalidRequestError):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
        return code_pb2.INVALID_ARGUMENT, f"invalid request: {exc}", [bad]
    if isinstance(exc, RequestTooLargeError):
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject="request", description=f"at most {exc.limit} bytes"
                )
            ]
        )
        return code_pb2.RESOURCE_EXHAUSTED, str(exc), [quota]
    if isinstance(exc, UnknownModelError):
        return code_pb2.NOT_FOUND, str(exc), [_resource("model", exc.model)]
    if isinstance(exc, UnknownJobError):
        return code_pb2.NOT_FOUND, str(exc), [_resource("job", exc.job_id)]
    if isinstance(exc, QueueFullError):
        return code_pb2.RESOURCE_EXHAUSTED, str(exc), [_retry_info(exc.retry_after_s)]
    if isinstance(exc, CallerLimitError):
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=exc.subject,
                    description=f"at most {exc.limit} {exc.what} per {exc.subject}",
                )
            ]
        )
        return code_pb2.RESOURCE_EXHAUSTED, str(exc), [_retry_info(exc.retry_after_s), quota]
    if isinstance(exc, NotServingError):
        retry = [_retry_info(exc.retry_after_s)] if exc.retry_after_s is not None else []
        return code_pb2.UNAVAILABLE, str(exc), retry
    if isinstance(exc, JobCancelledError):
        return code_pb2.CANCELLED, str(exc), []
    if isinstance(exc, JobDeadlineError):
        return code_pb2.DEADLINE_EXCEEDED, str(exc), []
    if isinstance(exc, JobServerLostError):
        return code_pb2.UNAVAILABLE, str(exc), [_error_info("JOB_SERVER_LOST")]
    if isinstance(exc, ReplicaHungError):
        return code_pb2.UNAVAILABLE, str(exc), [_error_info("REPLICA_HUNG")]
    if isinstance(exc, ReplicaCrashedError):
        return code_pb2.UNAVAILABLE, str(exc), [_error_info("REPLICA_CRASHED")]
    if isinstance(exc, JobOutOfMemoryError):
        return code_pb2.RESOURCE_EXHAUSTED, str(exc), [_error_info("DEVICE_OUT_OF_MEMORY")]
    if isinstance(exc, OutputStoreError):
        return code_pb2.UNAVAILABLE, str(exc), [_error_info("OUTPUT_STORE_FAILED")]
    if isinstance(exc, JobFailedError):
        return code_pb2.INTERNAL, str(exc), [_error_info("GENERATION_FAILED")]
    # Anything else is a bug: log it whole, tell the caller only that it happened.
    log.error("internal error", exc_info=exc)
    return code_pb2.INTERNAL, "internal error; the server log has the details", []


def _resource(kind: str, name: str) -> error_details_pb2.ResourceInfo:
    return error_details_pb2.ResourceInfo(
        resource_type=kind, resource_name=name, description=f"no such {kind}"
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
