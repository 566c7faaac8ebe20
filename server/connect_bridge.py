"""The gRPC servicers as Connect endpoints, so browsers call the very same code.

connect-python serves the Connect protocol, gRPC-Web and gRPC over plain HTTP; its endpoints
are built here from each service's descriptor, and every call goes to the grpc.aio servicer
method of the same name with a context that speaks the subset of ``grpc.aio.ServicerContext``
the servicers use (deadline, peer, metadata, abort with a rich status). So validation, the
error map (server/errors.py) and job lifetimes are the same whichever port a call comes in on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn

import grpc
from connectrpc.code import Code
from connectrpc.compression import Compression
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import status_pb2

from server.auth import KeyRing, authorize_call

_DETAILS_KEY = "grpc-status-details-bin"


class BridgeContext:
    """What the servicers ask of a gRPC context, answered from a Connect request."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx

    def time_remaining(self) -> float | None:
        remaining_ms = self._ctx.timeout_ms()
        return None if remaining_ms is None else max(0.0, remaining_ms / 1000.0)

    def peer(self) -> str:
        """Like gRPC's peer string, marked so a web caller never shares a gRPC caller's key."""
        return f"web:{self._ctx.client_address() or 'unknown'}"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._ctx.request_headers().allitems())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise ConnectError(connect_code(code), details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """Raise the status as a ConnectError, with its google.rpc details (BadRequest...)."""
        raise ConnectError(connect_code(status.code), status.details, rich_details(status))


def connect_code(code: grpc.StatusCode) -> Code:
    """The Connect code of a gRPC status code (the same codes, one spelled differently)."""
    if code == grpc.StatusCode.CANCELLED:
        return Code.CANCELED
    return Code[code.name]


def rich_details(status: grpc.Status) -> list[Any]:
    """The ``google.protobuf.Any`` details packed in the status's grpc-status-details-bin."""
    for key, value in status.trailing_metadata or ():
        if key == _DETAILS_KEY:
            return list(status_pb2.Status.FromString(value).details)
    return []


class ServiceApplication(ConnectASGIApplication[Any]):
    """One service's endpoints, each delegating to ``servicer``'s method of the same name."""

    def __init__(
        self,
        descriptor: ServiceDescriptor,
        servicer: object,
        read_max_bytes: int,
        keys: KeyRing | None = None,
        compressions: Iterable[Compression] | None = None,
    ) -> None:
        self._path = f"/{descriptor.full_name}"
        endpoints = {
            f"{self._path}/{method.name}": _endpoint(method, servicer, keys)
            for method in descriptor.methods
        }
        super().__init__(
            service=servicer,
            endpoints=lambda _svc: endpoints,
            read_max_bytes=read_max_bytes,
            compressions=compressions,
        )

    @property
    def path(self) -> str:
        return self._path


def _endpoint(method: MethodDescriptor, servicer: object, keys: KeyRing | None) -> Any:
    """A unary or server-streaming connectrpc endpoint for ``method``; with ``keys``, every call
    is checked as the gRPC port checks it (interceptors never see calls on this port)."""
    if method.client_streaming:
        raise ValueError(f"{method.full_name}: client streaming is not bridged")
    info = MethodInfo(
        name=method.name,
        service_name=method.containing_service.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        idempotency_level=IdempotencyLevel.UNKNOWN,
    )
    handler = getattr(servicer, method.name)
    path = f"/{method.containing_service.full_name}/{method.name}"

    async def bridged(ctx: RequestContext[Any, Any]) -> BridgeContext:
        context = BridgeContext(ctx)
        if keys:
            await authorize_call(keys, path, context.invocation_metadata(), context)
        return context

    if method.server_streaming:
        stream: Callable[[Any, Any], AsyncIterator[Any]] = handler

        async def server_stream(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            # The check runs in the task that iterates, so the caller it sets is the stream's.
            async for response in stream(request, await bridged(ctx)):
                yield response

        return Endpoint.server_stream(method=info, function=server_stream)
    unary: Callable[[Any, Any], Awaitable[Any]] = handler

    async def unary_call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await unary(request, await bridged(ctx))

    return Endpoint.unary(method=info, function=unary_call)


def service_applications(
    servicers: Mapping[ServiceDescriptor, object],
    read_max_bytes: int,
    keys: KeyRing | None = None,
    compressions: Iterable[Compression] | None = None,
) -> dict[str, ServiceApplication]:
    """URL path prefix (``/pointillist.v1.JobService``) to the service's application;
    ``compressions``: what request bodies may be compressed with (None: connect-python's
    default, gzip)."""
    apps = [
        ServiceApplication(descriptor, servicer, read_max_bytes, keys, compressions)
        for descriptor, servicer in servicers.items()
    ]
    return {app.path: app for app in apps}
