"""Blocking client of a pointillist server.

from pointillist import Client

with Client("127.0.0.1:50051") as client:
    result = client.generate("a lighthouse at dusk, oil painting", seed=7)
    result.images[0].save("lighthouse.png")

    with client.stream("a fox in the snow", steps=28) as stream:
        for event in stream:
            print(event)

    job_id = client.submit("a harbour at night", priority="low")  # returns at once
    with client.watch(job_id) as watch:  # from any process, as often as wanted
        result = watch.result()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pointillist.balancing import balancing_options
from pointillist.conversion import (
    EventEnvelope,
    event_from_proto,
    job_from_proto,
    model_list_from_proto,
    result_from_proto,
    server_status_from_proto,
)
from pointillist.credentials import TlsSettings, call_metadata
from pointillist.errors import CancelledError, InternalError, UnavailableError, error_from_rpc
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

__all__ = ["DEFAULT_TARGET", "Client", "GenerationStream", "JobWatch"]

DEFAULT_TARGET = "127.0.0.1:50051"

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A result carries every image in one message: four 1024x1024 PNGs pass gRPC's default
    # 4 MiB receive limit. The server sets its own send limit.
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    # round_robin over every address the target resolves to, and retries of refusals.
    *balancing_options(),
]
"""Channel options of the channels the clients make themselves (not of a channel passed in)."""


class CallSettings:
    """The per-client call defaults (timeout, metadata) shared by Client and AsyncClient."""

    def __init__(self, timeout: float | None, metadata: Sequence[tuple[str, str]]) -> None:
        self.timeout = timeout
        self.metadata = tuple((key, value) for key, value in metadata)

    def call_kwargs(self, timeout: float | None) -> dict[str, Any]:
        """Keyword arguments of a stub call: the call's timeout, else the client's."""
        return {
            "timeout": timeout if timeout is not None else self.timeout,
            "metadata": self.metadata,
        }


class StreamState:
    """What a stream has seen so far: its job id and its result (shared by sync and async)."""

    def __init__(self, job_id: str | None = None) -> None:
        self.job_id = job_id
        self.result: Result | None = None
        self.cancelled = False

    def accept(self, response: EventEnvelope) -> Event | None:
        """The typed event of a response (None to skip it), remembering the job id and result."""
        if response.job_id:
            self.job_id = response.job_id
        event = event_from_proto(response)
        if isinstance(event, Result):
            self.result = event
        return event

    def final_result(self) -> Result:
        """The result; CancelledError after a cancel, InternalError when the stream ended OK
        without one (a server bug)."""
        if self.result is None and self.cancelled:
            raise CancelledError(
                f"stream of job {self.job_id or '?'} was cancelled by the client",
                code=grpc.StatusCode.CANCELLED,
            )
        if self.result is None:
            raise InternalError(
                f"stream of job {self.job_id or '?'} ended without a result",
                code=grpc.StatusCode.INTERNAL,
            )
        return self.result


class GenerationStream:
    """The events of one StreamGenerate call: iterate it for typed events.

    Iteration ends after the result; a failed stream raises a PointillistError subclass. Leaving
    the ``with`` block before the end cancels the RPC, and so does :meth:`cancel`, after which
    iteration stops quietly. The ``timeout`` of the call bounds the whole stream.
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

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            if self._state.cancelled:
                raise StopIteration
            try:
                response = next(self._call)
            except StopIteration:
                raise
            except grpc.RpcError as err:
                if self._state.cancelled and err.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                raise error_from_rpc(err) from err
            event = self._state.accept(response)
            if event is not None:
                return event

    def result(self) -> Result:
        """Consume the rest of the stream and return its result (CancelledError after
        :meth:`cancel`)."""
        for _ in self:
            pass
        return self._state.final_result()

    def cancel(self) -> None:
        """Cancel the RPC; the server stops the job at its next denoising step."""
        self._state.cancelled = True
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._call.is_active():
            self.cancel()


class JobWatch(GenerationStream):
    """The events of one WatchJob call: the same typed events as :class:`GenerationStream`, from
    the job's first event on, whenever the watch starts.

    Iteration ends after the result; a failed or cancelled job raises its PointillistError.
    Unlike a generation stream, leaving the ``with`` block early or :meth:`cancel` ends only the
    watch: the job runs on (``Client.cancel_job`` cancels it).
    """

    def __init__(self, call: Any, job_id: str) -> None:
        super().__init__(call, job_id)

    def cancel(self) -> None:
        """Stop watching; the job itself runs on."""
        super().cancel()


class Client:
    """Blocking client of a pointillist server.

    Args:
        target: ``host:port`` of the server, or a target that resolves to several servers
            (``dns:///name:port``, ``ipv4:h1:p1,h2:p2``): calls go round-robin over them, and
            refusals that accepted nothing are retried (``pointillist.balancing``).
        timeout: default deadline of every call, in seconds (None: no deadline). For
            :meth:`stream` it bounds the whole stream.
        metadata: gRPC metadata sent with every call, e.g. ``[("authorization", "Bearer ...")]``.
        channel: a channel to use instead of an insecure one to ``target``; the caller owns it
            and :meth:`close` leaves it open.
        credentials: channel credentials for TLS (ignored when ``channel`` is given).
        tls: TLS from PEM files (server CA, client certificate and key for mutual TLS);
            ``credentials`` wins when both are given.
        api_key: sent as ``authorization: Bearer <key>`` on every call; None reads
            ``$POINTILLIST_API_KEY`` (unset: no key).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.Channel | None = None,
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
                channel = grpc.insecure_channel(target, options=options)
            else:
                channel = grpc.secure_channel(target, credentials, options=options)
        self._channel = channel
        self._stub = generation_pb2_grpc.GenerationServiceStub(channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self._status = status_pb2_grpc.StatusServiceStub(channel)
        self._settings = CallSettings(timeout, call_metadata(metadata, api_key))

    def generate(
        self,
        prompt: str,
        *,
        priority: Priority | str | None = None,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> Result:
        """Generate images and return the result. Zero / None values mean the model default.

        ``priority`` (``"low"``, ``"normal"``, ``"high"``; None: the server default, normal)
        orders the job among those waiting for the same model. Raises a PointillistError
        subclass when the server refuses or fails the request, and ValueError for values that
        cannot be sent (negative sizes, unknown format or priority).
        """
        parameters = build_parameters(prompt, **options)
        try:
            response = self._stub.Generate(
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
    ) -> GenerationStream:
        """Start a generation and return its stream of typed events.

        ``preview_every`` > 0 asks for a preview every that many steps, ``preview_size`` is its
        longest side (0: server default); ``priority`` is that of :meth:`generate`. Errors
        surface while iterating.
        """
        parameters = build_parameters(prompt, **options)
        call = self._stub.StreamGenerate(
            stream_request(parameters, priority_to_proto(priority)),
            **self._settings.call_kwargs(timeout),
        )
        return GenerationStream(call)

    def submit(
        self,
        prompt: str,
        *,
        priority: Priority | str | None = None,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> str:
        """Queue a generation as a job and return its id at once, without waiting for it.

        The parameters are those of :meth:`stream`; bad ones raise InvalidArgumentError here,
        as for :meth:`generate`. The job runs whether or not anyone watches it: follow it with
        :meth:`watch`, look it up with :meth:`get_job`, stop it with :meth:`cancel_job`. The
        server keeps a finished job for its retention time (10 minutes by default).
        """
        parameters = build_parameters(prompt, **options)
        request = submit_request(parameters, priority_to_proto(priority))
        try:
            response = self._jobs.SubmitJob(request, **self._settings.call_kwargs(timeout))
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        job_id: str = response.job_id
        return job_id

    def watch(self, job_id: str, *, timeout: float | None = None) -> JobWatch:
        """Watch a job's events, from its first (a job that already ended replays them all).

        Several watches of one job may run at once. Ending a watch leaves the job running. An
        unknown or forgotten id raises NotFoundError while iterating.
        """
        call = self._jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), **self._settings.call_kwargs(timeout)
        )
        return JobWatch(call, job_id)

    def get_job(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """A job's state, parameters, times, and result or error; NotFoundError when unknown."""
        try:
            response = self._jobs.GetJob(
                jobs_pb2.GetJobRequest(job_id=job_id), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return job_from_proto(response.job)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Cancel a job and return it as it then is.

        A queued job leaves its queue (CANCELLED); a running one stops at its next step (the
        server waits briefly for that: CANCELLED, or RUNNING with ``cancel_requested``); a job
        that had already ended comes back unchanged. NotFoundError when unknown.
        """
        try:
            response = self._jobs.CancelJob(
                jobs_pb2.CancelJobRequest(job_id=job_id), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return job_from_proto(response.job)

    def server_status(self, *, timeout: float | None = None) -> ServerStatus:
        """The server's devices, replicas, model queues, and whether it is draining."""
        try:
            response = self._status.GetServerStatus(
                status_pb2.GetServerStatusRequest(), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return server_status_from_proto(response)

    def models(self, *, timeout: float | None = None) -> ModelList:
        """The models the server serves, with precision, limits, defaults and readiness."""
        try:
            response = self._stub.ListModels(
                pb.ListModelsRequest(), **self._settings.call_kwargs(timeout)
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return model_list_from_proto(response)

    def wait_until_serving(self, timeout: float) -> None:
        """Block until the server reports SERVING on the standard health service.

        A server answers NOT_SERVING while its replicas warm up; this follows the health Watch
        stream (waiting for the server to come up at all) instead of polling.
        """
        stub = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service="")
        try:
            for response in stub.Watch(request, timeout=timeout, wait_for_ready=True):
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UnavailableError(
                    f"the server was not serving within {timeout:g}s",
                    code=grpc.StatusCode.UNAVAILABLE,
                ) from err
            raise error_from_rpc(err) from err
        raise UnavailableError(
            "the server ended its health stream", code=grpc.StatusCode.UNAVAILABLE
        )

    def close(self) -> None:
        """Close the channel (unless it was passed in)."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
