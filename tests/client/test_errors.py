"""error_from_rpc against real statuses: a real grpc.aio server aborts with rich statuses made by
grpcio-status, and real sync and asyncio channels receive them. The client is also run against
an address where nothing listens (UNAVAILABLE)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from pointillist import (
    AsyncClient,
    CancelledError,
    Client,
    DeadlineExceededError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PointillistError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    error_from_rpc,
)

# A test-only service: each method turns the google.rpc.Status it receives into the call's
# status, so every test states the status it wants. Requests and responses are raw bytes.
SERVICE = "pointillist.test.StatusEcho"


async def _abort_rich(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort_with_status(rpc_status.to_status(status_pb2.Status.FromString(request)))
    raise AssertionError("unreachable")


async def _abort_plain(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    status = status_pb2.Status.FromString(request)
    await context.abort(grpc.StatusCode(_code(status.code)), status.message)
    raise AssertionError("unreachable")


async def _abort_garbled(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    status = status_pb2.Status.FromString(request)
    await context.abort(
        grpc.StatusCode(_code(status.code)),
        status.message,
        trailing_metadata=(("grpc-status-details-bin", b"\xff\xff\xff"),),
    )
    raise AssertionError("unreachable")


async def _stream_then_abort(
    request: bytes, context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    yield b"one event"
    await context.abort_with_status(rpc_status.to_status(status_pb2.Status.FromString(request)))


def _code(number: int) -> tuple[int, str]:
    return next(code.value for code in grpc.StatusCode if code.value[0] == number)


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Rich": grpc.unary_unary_rpc_method_handler(_abort_rich),
                    "Plain": grpc.unary_unary_rpc_method_handler(_abort_plain),
                    "Garbled": grpc.unary_unary_rpc_method_handler(_abort_garbled),
                    "Stream": grpc.unary_stream_rpc_method_handler(_stream_then_abort),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
def refused_target() -> Iterator[str]:
    """An address with a bound but not listening socket: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def make_status(code: int, message: str, *details: Message) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=seconds))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def bad_request(*violations: tuple[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations
        ]
    )


async def aio_error(
    target: str, status: status_pb2.Status, method: str = "Rich"
) -> PointillistError:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(status.SerializeToString(), timeout=10)
    return error_from_rpc(caught.value)


async def sync_error(
    target: str, status: status_pb2.Status, method: str = "Rich"
) -> PointillistError:
    def call() -> PointillistError:
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(f"/{SERVICE}/{method}")(status.SerializeToString(), timeout=10)
        return error_from_rpc(caught.value)

    # The server runs on this event loop: the blocking call runs in a thread.
    return await asyncio.to_thread(call)


Receive = Callable[..., Awaitable[PointillistError]]


@pytest.fixture(params=["sync", "aio"])
def receive(request: pytest.FixtureRequest) -> Receive:
    """The error a sync or an asyncio channel gets for a status."""
    return sync_error if request.param == "sync" else aio_error


async def test_invalid_argument_lists_every_field_violation(target: str, receive: Receive) -> None:
    status = make_status(
        code_pb2.INVALID_ARGUMENT,
        "2 invalid fields",
        bad_request(
            ("parameters.width", "must be a multiple of 16, got 1000"),
            ("parameters.steps", "must be at most 50, got 80"),
        ),
    )

    error = await receive(target, status)

    assert isinstance(error, InvalidArgumentError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "2 invalid fields"
    assert error.field_violations == [
        FieldViolation("parameters.width", "must be a multiple of 16, got 1000"),
        FieldViolation("parameters.steps", "must be at most 50, got 80"),
    ]
    assert str(error) == "INVALID_ARGUMENT: 2 invalid fields"


async def test_resource_exhausted_carries_the_retry_delay_and_error_info(
    target: str, receive: Receive
) -> None:
    info = error_details_pb2.ErrorInfo(
        reason="QUEUE_FULL", domain="pointillist", metadata={"model": "demo"}
    )
    status = make_status(code_pb2.RESOURCE_EXHAUSTED, "queue full", retry_info(2.5), info)

    error = await receive(target, status)

    assert isinstance(error, ResourceExhaustedError)
    assert error.retry_after_s == 2.5
    assert error.reason == "QUEUE_FULL"
    assert error.error_info == info
    assert error.details == [retry_info(2.5), info]


async def test_unavailable_with_and_without_retry_info(target: str, receive: Receive) -> None:
    warming = await receive(target, make_status(code_pb2.UNAVAILABLE, "warming up", retry_info(30)))
    draining = await receive(target, make_status(code_pb2.UNAVAILABLE, "draining"))

    assert isinstance(warming, UnavailableError)
    assert warming.retry_after_s == 30.0
    assert isinstance(draining, UnavailableError)
    assert draining.retry_after_s is None


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (code_pb2.NOT_FOUND, NotFoundError),
        (code_pb2.DEADLINE_EXCEEDED, DeadlineExceededError),
        (code_pb2.CANCELLED, CancelledError),
        (code_pb2.UNAUTHENTICATED, UnauthenticatedError),
        (code_pb2.PERMISSION_DENIED, PermissionDeniedError),
        (code_pb2.INTERNAL, InternalError),
    ],
)
async def test_each_status_code_has_its_class(target: str, code: int, kind: type) -> None:
    error = await aio_error(target, make_status(code, "nope"))

    assert type(error) is kind
    assert error.message == "nope"
    assert error.details == []


async def test_unmapped_codes_are_plain_pointillist_errors(target: str) -> None:
    error = await aio_error(target, make_status(code_pb2.FAILED_PRECONDITION, "not yet"))

    assert type(error) is PointillistError
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION


async def test_unknown_detail_types_stay_packed(target: str) -> None:
    odd = duration_pb2.Duration(seconds=1)
    error = await aio_error(target, make_status(code_pb2.INTERNAL, "bug", odd))

    assert len(error.details) == 1
    packed = error.details[0]
    assert isinstance(packed, any_pb2.Any)
    assert packed.Is(duration_pb2.Duration.DESCRIPTOR)


async def test_status_without_rich_details(target: str, receive: Receive) -> None:
    error = await receive(target, make_status(code_pb2.NOT_FOUND, "no model x"), "Plain")

    assert isinstance(error, NotFoundError)
    assert error.message == "no model x"
    assert error.details == []


async def test_unreadable_rich_status_is_ignored(target: str, receive: Receive) -> None:
    error = await receive(target, make_status(code_pb2.INVALID_ARGUMENT, "bad"), "Garbled")

    assert isinstance(error, InvalidArgumentError)
    assert error.message == "bad"
    assert error.field_violations == []


async def test_error_ending_a_sync_stream(target: str) -> None:
    status = make_status(code_pb2.RESOURCE_EXHAUSTED, "quota", retry_info(1))

    def consume() -> tuple[list[bytes], PointillistError]:
        received: list[bytes] = []
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_stream(f"/{SERVICE}/Stream")(status.SerializeToString())
            with pytest.raises(grpc.RpcError) as caught:
                received.extend(call)
        return received, error_from_rpc(caught.value)

    received, error = await asyncio.to_thread(consume)

    assert received == [b"one event"]
    assert isinstance(error, ResourceExhaustedError)
    assert error.retry_after_s == 1.0


def test_a_bare_rpc_error_is_unknown() -> None:
    error = error_from_rpc(grpc.RpcError())

    assert type(error) is PointillistError
    assert error.code is grpc.StatusCode.UNKNOWN


# -- the clients against an address where nothing listens --------------------------------------


def test_client_raises_unavailable(refused_target: str) -> None:
    with Client(refused_target, timeout=5) as client:
        with pytest.raises(UnavailableError) as caught:
            client.models()
        assert isinstance(caught.value.__cause__, grpc.RpcError)
        with pytest.raises(UnavailableError):
            client.generate("a fox")
        with pytest.raises(UnavailableError), client.stream("a fox") as stream:
            next(iter(stream))


async def test_async_client_raises_unavailable(refused_target: str) -> None:
    async with AsyncClient(refused_target, timeout=5) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.models()
        assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
        with pytest.raises(UnavailableError):
            await client.generate("a fox")
        with pytest.raises(UnavailableError):
            async with client.stream("a fox") as stream:
                await stream.result()
