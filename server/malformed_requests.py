"""Request bodies that are not valid protobuf get INVALID_ARGUMENT, not gRPC's UNKNOWN.

Left alone, a body that fails to parse makes grpc answer UNKNOWN with the parser's exception
text. This interceptor parses leniently and lets the RPC end with a clear status instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server import errors
from server.rpc_handlers import guarded, rebuild
from server.validation import FieldViolation, InvalidRequestError


class MalformedRequest:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Unary-request methods only: streaming requests (reflection) keep grpc's own parsing."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        message_type = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        type_name = message_type.full_name if message_type is not None else "request"

        def lenient(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError:
                return MalformedRequest(type_name)

        return guarded(rebuild(handler, _behavior(handler), lenient), _refuse_malformed)


def _behavior(handler: grpc.RpcMethodHandler) -> Any:
    return handler.unary_unary or handler.unary_stream


def malformed_violation(message_type: str) -> FieldViolation:
    """The violation for a body that is not a ``message_type`` (the browser port's too)."""
    return FieldViolation("request", f"is not a valid {message_type} message (corrupt wire format)")


async def _refuse_malformed(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, MalformedRequest):
        violation = malformed_violation(request.message_type)
        await errors.abort(context, InvalidRequestError([violation]))
