"""GenerationService: convert the request, delegate to the scheduler, convert the events back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from engine.job import GenerationOutput
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.caching_scheduler import CachingScheduler
from scheduler.job import Job, JobEvent
from server import conversion, errors, submission
from server.caller_limits import StreamLimiter
from server.job_telemetry import JobTelemetry
from server.output_store import OutputPublisher

# How far apart gRPC's deadline clock and Python's can read (a few ms were seen; this is ample).
DEADLINE_CLOCK_SKEW_S = 0.05


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    """Thin: every decision lives in server.validation, the scheduler, or server.errors."""

    def __init__(
        self,
        scheduler: CachingScheduler,
        outputs: OutputPublisher | None = None,
        telemetry: JobTelemetry | None = None,
        streams: StreamLimiter | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._outputs = outputs
        self._telemetry = telemetry
        self._streams = streams or StreamLimiter(0)

    async def StreamGenerate(
        self, request: pb.StreamGenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        async with self._job(request.parameters, request.priority, context) as job:
            async for event in job.events():
                yield conversion.stream_response(job, await published(self._outputs, event))

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        async with self._job(request.parameters, request.priority, context) as job:
            async for event in job.events():
                if isinstance(event, GenerationOutput):
                    output = event if self._outputs is None else await self._outputs.publish(event)
                    result = conversion.result(output, job.spec)
                    return pb.GenerateResponse(job_id=job.id, result=result)
            raise AssertionError("a job's events ended without a result or an error")
        raise AssertionError("unreachable: _job aborts the RPC on every error")

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[conversion.model_info(status) for status in self._scheduler.models()],
            default_model=self._scheduler.default_model(),
        )

    @contextlib.asynccontextmanager
    async def _job(
        self,
        params: pb.GenerationParameters,
        priority: pb.Priority,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Job]:
        """Submit a job for the RPC's lifetime: errors end the RPC with their status, and a
        job still unfinished when the RPC ends (cancelled, deadline, caller gone) is cancelled
        so its replica is free again."""
        job: Job | None = None
        try:
            with self._streams.hold(conversion.caller(context)):
                job = await submission.submit(
                    self._scheduler,
                    params,
                    priority,
                    context,
                    bound_by_call_deadline=True,
                    telemetry=self._telemetry,
                )
                yield job
        except Exception as exc:
            await errors.abort(context, exc)
        finally:
            if job is not None and not job.state.finished:
                # gRPC ends the call on its own clock, which can read a few ms before Python's:
                # a call ended that close to its deadline ended by it, not by a cancel.
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= DEADLINE_CLOCK_SKEW_S
                await self._scheduler.cancel(job.id, deadline_exceeded=expired)


async def published(outputs: OutputPublisher | None, event: JobEvent) -> JobEvent:
    """The event, with a result's images put in the output store (when one is configured)."""
    if outputs is not None and isinstance(event, GenerationOutput):
        return await outputs.publish(event)
    return event
