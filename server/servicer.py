"""GenerationService: convert the request, delegate to the scheduler, convert the events back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from engine.job import GenerationOutput, GenerationSpec
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.interface import Scheduler
from scheduler.job import Job
from server import conversion, errors
from server.validation import resolve_parameters


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    """Thin: every decision lives in server.validation, the scheduler, or server.errors."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def StreamGenerate(
        self, request: pb.StreamGenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        job: Job | None = None
        try:
            job = self._submit(request.parameters, context)
            async for event in job.events():
                yield conversion.stream_response(job, event)
        except Exception as exc:
            await errors.abort(context, exc)
        finally:
            # The caller cancelled, its deadline passed or it went away: free the replica.
            if job is not None and not job.state.finished:
                await self._scheduler.cancel(job.id)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        job: Job | None = None
        try:
            job = self._submit(request.parameters, context)
            async for event in job.events():
                if isinstance(event, GenerationOutput):
                    return pb.GenerateResponse(
                        job_id=job.id, result=conversion.result(event, job.spec)
                    )
            raise AssertionError("a job's events ended without a result or an error")
        except Exception as exc:
            await errors.abort(context, exc)
        finally:
            if job is not None and not job.state.finished:
                await self._scheduler.cancel(job.id)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[conversion.model_info(status) for status in self._scheduler.models()],
            default_model=self._scheduler.default_model(),
        )

    def _submit(self, params: pb.GenerationParameters, context: grpc.aio.ServicerContext) -> Job:
        spec = self._resolve(params)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        return self._scheduler.submit(spec, deadline=deadline)

    def _resolve(self, params: pb.GenerationParameters) -> GenerationSpec:
        models = {status.config.id: status.config for status in self._scheduler.models()}
        return resolve_parameters(params, models, self._scheduler.default_model())
