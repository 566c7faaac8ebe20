"""Ends the server's open-ended streams (Health Watch, reflection) with UNAVAILABLE on shutdown.

A Health Watch stream never ends by itself, and a reflection stream lasts as long as its client
keeps it open. grpc's ``server.stop(grace)`` cancels whatever is still open when the grace runs
out, and grpc then logs an ``ERROR ... Exception not handled`` CancelledError traceback for each:
a drain is not an error. Closing them first ends each with a status that says what happened and
that a client may retry elsewhere.

Only these services are wrapped: pointillist's own streams end when their jobs do (the drain
ends every job), and wrapping them would cost a task per streamed message on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

OPEN_ENDED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
SHUTTING_DOWN = "the server is shutting down; retry on another replica"

T = TypeVar("T")


class _Closed(Exception):
    """Raised in a wrapped stream when the server closes its open streams."""


class OpenStreamCloser(grpc.aio.ServerInterceptor):
    """``close()`` ends every open Health Watch and reflection stream with UNAVAILABLE."""

    def __init__(self) -> None:
        # An asyncio.Event binds to a loop on first use (Python >= 3.10), not when made.
        self._closing = asyncio.Event()

    def close(self) -> None:
        self._closing.set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(OPEN_ENDED_SERVICES):
            return handler
        # grpc's handlers are namedtuples: swap the streaming behaviour, keep the rest.
        wrapped: Any = handler
        if wrapped.unary_stream is not None:
            return wrapped._replace(unary_stream=self._wrap(wrapped.unary_stream))
        if wrapped.stream_stream is not None:
            return wrapped._replace(stream_stream=self._wrap(wrapped.stream_stream))
        return handler

    def _wrap(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        if asyncio.iscoroutinefunction(behaviour):
            # A coroutine that writes with context.write (grpc_health's Watch).
            async def run(request: Any, context: grpc.aio.ServicerContext) -> None:
                try:
                    await self._until_closed(behaviour(request, context))
                except _Closed:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

            return run

        if not inspect.isasyncgenfunction(behaviour):
            return behaviour  # a synchronous handler: grpc runs it on a thread, left alone

        # An async generator (reflection's ServerReflectionInfo).
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            responses = behaviour(request, context)
            try:
                while True:
                    try:
                        item = await self._until_closed(responses.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item
            except _Closed:
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            finally:
                with contextlib.suppress(Exception):
                    await responses.aclose()

        return stream

    async def _until_closed(self, awaitable: Awaitable[T]) -> T:
        closing = self._closing
        if closing.is_set():
            raise _Closed
        work = asyncio.ensure_future(awaitable)
        closed = asyncio.ensure_future(closing.wait())
        try:
            await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the call itself was cancelled (its client left)
            work.cancel()
            raise
        finally:
            closed.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        raise _Closed
