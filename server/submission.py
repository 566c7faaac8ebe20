"""A request becomes a scheduled job: validated against the served models, with its priority,
its caller's identity and (for calls that wait for the result) its deadline. A request with an
explicit seed is deterministic and goes through the result cache."""

from __future__ import annotations

import time

import grpc

from pointillist.v1 import generation_pb2 as pb
from scheduler.caching_scheduler import CachingScheduler
from scheduler.job import Job
from server import conversion
from server.validation import resolve_parameters


async def submit(
    scheduler: CachingScheduler,
    params: pb.GenerationParameters,
    priority: pb.Priority,
    context: grpc.aio.ServicerContext,
    *,
    bound_by_call_deadline: bool,
) -> Job:
    """Validate and submit; raises the domain errors that server.errors maps to statuses.

    ``bound_by_call_deadline``: StreamGenerate and Generate hand their RPC deadline to the job;
    SubmitJob does not (the job outlives the call).
    """
    scheduling_priority = conversion.scheduling_priority(priority)
    models = {status.config.id: status.config for status in scheduler.models()}
    spec = resolve_parameters(params, models, scheduler.default_model())
    deadline = None
    remaining = context.time_remaining() if bound_by_call_deadline else None
    if remaining is not None:
        deadline = time.monotonic() + remaining
    caller = conversion.caller(context)
    if params.HasField("seed"):
        return await scheduler.submit_deterministic(
            spec, deadline=deadline, priority=scheduling_priority, caller=caller
        )
    return scheduler.submit(spec, deadline=deadline, priority=scheduling_priority, caller=caller)
