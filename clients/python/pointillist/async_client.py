"""asyncio client of a pointillist server; mirrors :class:`pointillist.Client`.

from pointillist import AsyncClient

async with AsyncClient("127.0.0.1:50051") as client:
    result = await client.generate("a lighthouse at dusk, oil painting", seed=7)

    async with client.stream("a fox in the snow", steps=28) as stream:
        async for event in stream:
            print(event)

    job_id = await client.submit("a harbour at night", priority="low")
    async with client.watch(job_id) as watch:
        result = await watch.result()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
import grpc.aio

from pointillist.client import CHANNEL_OPTIONS, DEFAULT_TARGET, CallSettings, StreamState
from pointillist.conversion import (
    job_from_proto,
    model_list_from_proto,
    result_from_proto,
    server_status_from_proto,
)
from pointillist.credentials import TlsSettings, call_metadata
from pointillist.errors import error_from_rpc
from pointillist.events import Event, ModelList, Result
from pointillist.jobs import JobInfo, Priority
from pointillist.request_building import (
    GenerationOptions,
    build_parameters,
    generate_request,
    priority_to_proto,
    stream_request,
    submit_request,
)
from pointillist.server_status import ServerStatus
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import (
    generation_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

__all__ = ["AsyncClient", "AsyncGenerationStream", "AsyncJobWatch"]


class AsyncGenerationStream:
    """The events of one StreamGenerate call: ``async for`` it for typed events.

    Iteration ends after the result; a failed stream raises a PointillistError subclass. Leaving
    the ``async with`` block before the end cancels the RPC, and so does :meth:`cancel`, after
    which iteration stops quietly. The ``timeout`` of the call bounds the whole stream.
    """

    def __init__(self, call: Any, job_id: str | None = None) -> None:
        self._call = call
        self._state = StreamState(job_id)

    @property
    def job_id(self) -> str | None:
        """The server's job id, known from the first event on."""
        return self._state.job_id

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._state.cancelled

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._state.cancelled:
                raise StopAsyncIteration
            try:
                response = await self._call.read()
            except grpc.RpcError as err:
                if self._state.cancelled and err.code() == grpc.StatusCode.CANCELLED:
                    raise StopAsyncIteration from None
                raise error_from_rpc(err) from err
            except asyncio.CancelledError:
                # grpc.aio raises CancelledError for a locally cancelled call. Swallow it only
                # when it is ours (cancel() was called) and the task itself is not cancelled.
                task = asyncio.current_task()
                if self._state.cancelled and (task is None or task.cancelling() == 0):
                    raise StopAsyncIteration from None
                raise
            if response is grpc.aio.EOF:
                raise StopAsyncIteration
            event = self._state.accept(response)
            if event is not None:
                return event

    async def result(self) -> Result:
        """Consume the rest of the stream and return its result (CancelledError after
        :meth:`cancel`)."""
        async for _ in self:
            pass
        return self._state.final_result()

    def cancel(self) -> None:
        """Cancel the RPC; the server stops the job at its next denoising step."""
        self._state.cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._call.done():
            self.cancel()


class AsyncJobWatch(AsyncGenerationStream):
    """The events of one WatchJob call; see :class:`pointillist.JobWatch`.

    Leaving the ``async with`` block early or :meth:`cancel` ends only the watch: the job runs
    on (``AsyncClient.cancel_job`` cancels it).
    """

    def __init__(self, call: Any, job_id: str) -> None:
        super().__init__(call, job_id)

    def cancel(self) -> None:
        """Stop watching; the job itself runs on."""
        super().cancel()


class AsyncClient:
    """asyncio client of a pointillist server; the arguments are those of :class:`Client`.

    A ``channel`` passed in must be a ``grpc.aio.Channel``; the caller owns it.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TlsSettings | None = None,
        api_key: str | None = None,
    ) -> None:
        self.target = target
        self._owns_channel = channel is None
        if channel is None:
            options = [*CHANNEL_OPTIONS, *(tls.channel_options() if tls else [])]
            if credentials is None and tls is not None:
                credentials = tls.credentials()
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=options)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._channel = channel
        self._stub = generation_pb2_grpc.GenerationServiceStub(channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self._status = status_pb2_grpc.StatusServiceStub(channel)
        self._settings = CallSettings(timeout, call_metadata(metadata, api_key))

    async def generate(
        self,
        prompt: str,
        *,
        priority: Priority | str | None = None,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> Result:
        """Generate images and return the result; see :meth:`pointillist.Client.generate`."""
        parameters = build_parameters(prompt, **options)
        try:
            response = await self._stub.Generate(
                generate_request(parameters, priority_to_proto(priority)),
                **self._settings.call_kwargs(timeout),
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return result_from_proto(response.job_id, response.result)

    def stream(
        self,
        prompt: str,
        *,
        priority: Priority | str | None = None,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> AsyncGenerationStream:
        """Start a generation and return its async stream; see :meth:`pointillist.Client.stream`.

        Not a coroutine: ``async with client.stream(...) as stream`` and
        ``async for event in client.stream(...)`` both work.
        """
        parameters = build_parameters(prompt, **options)
        call = self._stub.StreamGenerate(
            stream_request(parameters, priority_to_proto(priority)),
            **self._settings.call_kwargs(timeout),
        )
        return AsyncGenerationStream(call)

    async def submit(
        self,
        prompt: str,
        *,
        priority: Priority | str | None = None,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> str:
        """Queue a job and return its id at once; see :meth:`pointillist.Client.submit`."""
        parameters = build_parameters(prompt, **options)
        request = submit_request(parameters, priority_to_proto(priority))
        try:
            response = await self._jobs.SubmitJob(request, **self._settings.call_kwargs(timeout))
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        job_id: str = response.job_id
        return job_id

    def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncJobWatch:
        """Watch a job's events from its first; see :meth:`pointillist.Client.watch`.

        Not a coroutine, like :meth:`stream`.
        """
        call = self._jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), **self._settings.call_kwargs(timeout)
        )
        return AsyncJobWatch(call, job_id)

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """A job's record; see :meth:`pointillist.Client.get_job`."""
        try:
            response = await self._jobs.GetJob(
                jobs_pb2.GetJobRequest(job_id=job_id), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return job_from_proto(response.job)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Cancel a job; see :meth:`pointillist.Client.cancel_job`."""
        try:
            response = await self._jobs.CancelJob(
                jobs_pb2.CancelJobRequest(job_id=job_id), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return job_from_proto(response.job)

    async def server_status(self, *, timeout: float | None = None) -> ServerStatus:
        """Devices, replicas and queues; see :meth:`pointillist.Client.server_status`."""
        try:
            response = await self._status.GetServerStatus(
                status_pb2.GetServerStatusRequest(), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return server_status_from_proto(response)

    async def models(self, *, timeout: float | None = None) -> ModelList:
        """The models the server serves; see :meth:`pointillist.Client.models`."""
        try:
            response = await self._stub.ListModels(
                pb.ListModelsRequest(), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return model_list_from_proto(response)

    async def close(self) -> None:
        """Close the channel (unless it was passed in); cancels the calls still running."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
