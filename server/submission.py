"""A request becomes a scheduled job: validated against the served models, with its priority,
its caller's identity and (for calls that wait for the result) its deadline. A request with an
explicit seed is deterministic and goes through the result cache."""

from __future__ import annotations

import dataclasses
import time

import grpc

from engine.config import ModelConfig
from engine.job import GenerationSpec
from pointillist.v1 import generation_pb2 as pb
from scheduler.caching_scheduler import CachingScheduler
from scheduler.job import Job
from server import conversion
from server.image_input import read_inputs
from server.job_telemetry import JobTelemetry
from server.validation import RequestTooLargeError, resolve_parameters


async def submit(
    scheduler: CachingScheduler,
    params: pb.GenerationParameters,
    priority: pb.Priority,
    context: grpc.aio.ServicerContext,
    *,
    bound_by_call_deadline: bool,
    telemetry: JobTelemetry | None = None,
) -> Job:
    """Validate and submit; raises the domain errors that server.errors maps to statuses.

    ``bound_by_call_deadline``: StreamGenerate and Generate hand their RPC deadline to the job;
    SubmitJob does not (the job outlives the call). ``telemetry`` traces the validation and
    observes the job (spans, metrics, its closing log line).
    """
    scheduling_priority = conversion.scheduling_priority(priority)
    models = {status.config.id: status.config for status in scheduler.models()}
    if telemetry is None:
        spec = _resolve(params, models, scheduler)
    else:
        with telemetry.validating():
            spec = _resolve(params, models, scheduler)
    deadline = None
    remaining = context.time_remaining() if bound_by_call_deadline else None
    if remaining is not None:
        deadline = time.monotonic() + remaining
    caller = conversion.caller(context)
    if params.HasField("seed"):
        job = await scheduler.submit_deterministic(
            spec, deadline=deadline, priority=scheduling_priority, caller=caller
        )
    else:
        job = scheduler.submit(spec, deadline=deadline, priority=scheduling_priority, caller=caller)
    if telemetry is not None:
        telemetry.attach(job)
    await scheduler.visible_everywhere(
        job
    )  # its id goes out only once every server can find the job
    return job


def _resolve(
    params: pb.GenerationParameters, models: dict[str, ModelConfig], scheduler: CachingScheduler
) -> GenerationSpec:
    """The request's spec, its input images decoded (``server.image_input``)."""
    model = models.get(params.model or scheduler.default_model())
    if model is None:  # resolve_parameters says so, with the models there are
        return resolve_parameters(params, models, scheduler.default_model())
    # gRPC's own limit is the largest model's; each model holds its requests to its own.
    size = params.ByteSize()
    if size > model.limits.max_request_bytes:
        raise RequestTooLargeError(size, model.limits.max_request_bytes, model.id)
    inputs = read_inputs(params, model, scheduler)
    if inputs.init_image is None:
        return resolve_parameters(params, models, scheduler.default_model())
    spec = resolve_parameters(
        params,
        models,
        scheduler.default_model(),
        image_size=(inputs.init_image.width, inputs.init_image.height),
    )
    return dataclasses.replace(
        spec, init_image=inputs.init_image, mask=inputs.mask, strength=inputs.strength
    )
