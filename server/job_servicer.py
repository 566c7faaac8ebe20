"""JobService: jobs that outlive the call that started them (submit, watch, get, cancel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from pointillist.v1 import jobs_pb2 as jobs_pb
from pointillist.v1 import jobs_pb2_grpc as jobs_grpc
from scheduler.caching_scheduler import CachingScheduler
from scheduler.errors import SchedulerError
from scheduler.job import Job
from server import conversion, errors, submission
from server.caller_limits import StreamLimiter
from server.delivery import SharedEnvelopes
from server.job_access import find_visible_job
from server.job_telemetry import JobTelemetry
from server.output_store import OutputPublisher

CANCEL_WAIT_S = 10.0
"""How long CancelJob waits for a running job to stop (the engine stops within one step)."""
_REPLY_MARGIN_S = 0.5
"""Time kept back from the caller's deadline to send CancelJob's reply."""


class JobServicer(jobs_grpc.JobServiceServicer):
    """Thin, like GenerationServicer; unlike it, a job here is never tied to an RPC's lifetime:
    a watcher that leaves, or a SubmitJob call that ends, leaves the job running."""

    def __init__(
        self,
        scheduler: CachingScheduler,
        cancel_wait_s: float = CANCEL_WAIT_S,
        outputs: OutputPublisher | None = None,
        telemetry: JobTelemetry | None = None,
        streams: StreamLimiter | None = None,
        watchers: StreamLimiter | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._cancel_wait_s = cancel_wait_s
        self._outputs = outputs
        self._telemetry = telemetry
        self._streams = streams or StreamLimiter(0)
        # Watchers of one job (a link shared widely, a client in a reconnect loop) are bounded
        # too: each holds a stream and gets a copy of every event.
        self._watchers = watchers or StreamLimiter(0, what="watchers", subject="job")
        self.envelopes = SharedEnvelopes(outputs)

    async def SubmitJob(
        self, request: jobs_pb.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb.SubmitJobResponse:
        try:
            job = await submission.submit(
                self._scheduler,
                request.parameters,
                request.priority,
                context,
                bound_by_call_deadline=False,
                telemetry=self._telemetry,
            )
        except Exception as exc:
            await errors.abort(context, exc)
        return jobs_pb.SubmitJobResponse(job_id=job.id)

    async def WatchJob(
        self, request: jobs_pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb.WatchJobResponse]:
        try:
            job = await find_visible_job(self._scheduler, request.job_id)
            with (
                self._streams.hold(conversion.caller(context)),
                self._watchers.hold(job.id),
                self.envelopes.watching(job) as watcher,
            ):
                # A watcher that leaves stops here (the generator is closed); the job runs on.
                async for event in job.events():
                    yield await watcher.envelope(event)
        except Exception as exc:
            await errors.abort(context, exc)

    async def GetJob(
        self, request: jobs_pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb.GetJobResponse:
        try:
            job = await find_visible_job(self._scheduler, request.job_id)
            output = job.result
            if output is not None and self._outputs is not None:
                output = await self._outputs.publish(output)
        except Exception as exc:
            await errors.abort(context, exc)
        return jobs_pb.GetJobResponse(job=conversion.job(job, output))

    async def CancelJob(
        self, request: jobs_pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb.CancelJobResponse:
        try:
            job = await find_visible_job(self._scheduler, request.job_id)
            await self._scheduler.cancel(job.id)
        except Exception as exc:
            await errors.abort(context, exc)
        await self._until_finished(job, self._wait_budget(context))
        return jobs_pb.CancelJobResponse(job=conversion.job(job))

    def _wait_budget(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._cancel_wait_s
        return max(0.0, min(self._cancel_wait_s, remaining - _REPLY_MARGIN_S))

    @staticmethod
    async def _until_finished(job: Job, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the job to end, however it ends."""

        async def finished() -> None:
            with contextlib.suppress(SchedulerError):
                async for _ in job.events():
                    pass

        if job.state.finished:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished(), timeout_s)
