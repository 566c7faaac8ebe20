"""Every RPC's outcome: its status on the RPC span, its count and latency, one log line.

A gRPC aio server interceptor, placed inside OpenTelemetry's (``server.telemetry``), so the RPC
span is current here. It fills one gap of that instrumentation: our handlers end an RPC with
``context.abort_with_status`` (rich error details), which bypasses the instrumentation's
``abort`` wrapper and would leave the span's ``rpc.grpc.status_code`` at 0 and its status unset.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from server.logs import RpcLogContext, current_rpc
from server.metrics import ServerMetrics

log = logging.getLogger("pointillist.rpc")
# Probes and tooling, called often: their lines are DEBUG, the API's are INFO.
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class RpcTelemetry(grpc.aio.ServerInterceptor):
    """Counts, times and logs every RPC, and sets its span's status from its gRPC status."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(
        self, method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            current_rpc.set(RpcLogContext(method, _job_id(request)))
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finished(method, context, error, time.perf_counter() - started)

        return observed

    def _stream(
        self,
        method: str,
        behavior: Callable[[Any, grpc.aio.ServicerContext], Any],
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            current_rpc.set(RpcLogContext(method, _job_id(request)))
            error: BaseException | None = None
            try:
                responses = behavior(request, context)
                if inspect.isawaitable(responses):
                    # A handler that writes with context.write (grpc's health Watch): as an
                    # async generator that yields nothing, it also fits the OpenTelemetry
                    # interceptor around this one, which iterates whatever it wraps.
                    await responses
                else:
                    async for response in responses:
                        yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finished(method, context, error, time.perf_counter() - started)

        return observed

    def _finished(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
        duration_s: float,
    ) -> None:
        code = _final_code(context, error)
        labels = {"rpc": method, "code": code.name}
        self._metrics.rpc_requests.add(1, labels)
        self._metrics.rpc_duration.record(duration_s, labels)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                details = context.details() or ""
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details!s}"))
        level = logging.DEBUG if method.startswith(_QUIET_PREFIXES) else logging.INFO
        if log.isEnabledFor(level):
            fields = {"rpc": method, "code": code.name, "duration_ms": round(duration_s * 1e3, 1)}
            log.log(level, "rpc finished", extra={"fields": fields})


def _job_id(request: Any) -> str:
    """The job a request names (WatchJob, GetJob, CancelJob); "" for the others."""
    return str(getattr(request, "job_id", "") or "")


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller gets: the one the handler set (an abort sets one), else OK, or
    CANCELLED when the call was cancelled, UNKNOWN when the handler raised."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    if error is not None:
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK
