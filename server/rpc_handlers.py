"""Rebuilding a gRPC method handler around its behavior, for server interceptors.

A ``grpc.aio.ServerInterceptor`` gets the method's handler and may return another. gRPC has four
kinds of handler (unary or streaming request, unary or streaming response); these functions keep
the kind and the serializers and change only what the interceptor needs to change.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]
"""A handler's behavior: ``(request or request iterator, context)`` to a response (awaitable)
or to an async iterator of responses."""

Guard = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]
"""Runs before the behavior with its request and context; ends the RPC by aborting."""


def behavior_of(handler: grpc.RpcMethodHandler) -> Behavior:
    """The function that serves the method, whichever kind of handler it is."""
    behavior = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    assert behavior is not None, "a method handler always has one behavior"
    return behavior


def rebuild(
    handler: grpc.RpcMethodHandler,
    behavior: Behavior,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind and serializers as ``handler``, serving with ``behavior``
    (and ``request_deserializer`` instead of the handler's, when given)."""
    deserializer = request_deserializer or handler.request_deserializer
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behavior, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(behavior, deserializer, serializer)


def guarded(handler: grpc.RpcMethodHandler, guard: Guard) -> grpc.RpcMethodHandler:
    """``handler`` with ``guard(request, context)`` awaited before its behavior runs.

    The guard runs in the RPC's own task, so a context variable it sets is seen by the
    behavior (and by nothing else).
    """
    inner = behavior_of(handler)
    if handler.response_streaming and inspect.isasyncgenfunction(inner):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await guard(request, context)
            async for response in inner(request, context):
                yield response

        return rebuild(handler, streaming)

    # A unary response, or a streaming one written with ``context.write`` (the health service's
    # Watch): the behavior is a coroutine either way.
    async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await guard(request, context)
        return await inner(request, context)

    return rebuild(handler, coroutine)
