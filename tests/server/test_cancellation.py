"""Cancelling a stream stops the denoising within one step and frees the replica at once."""

from __future__ import annotations

import grpc
import pytest

from pointillist.v1 import generation_pb2 as pb
from scheduler.job import JobState

LONG_STEPS = 100
LONG_JOB = pb.GenerationParameters(
    prompt="a long job", width=512, height=512, steps=LONG_STEPS, seed=7
)


def test_cancel_mid_stream_stops_within_one_step_and_the_next_request_runs_at_once(
    stub, demo_server
):
    call = stub.StreamGenerate(pb.StreamGenerateRequest(parameters=LONG_JOB), timeout=120)
    job_id = ""
    for event in call:
        job_id = event.job_id
        if event.HasField("progress") and event.progress.step == 3:
            call.cancel()
            break
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED

    job = demo_server.wait_job_finished(job_id)
    assert job.state is JobState.CANCELLED
    assert job.steps_after_cancel is not None and job.steps_after_cancel <= 1
    assert job.completed_steps is not None and job.completed_steps < LONG_STEPS

    follow_up = stub.Generate(
        pb.GenerateRequest(
            parameters=pb.GenerationParameters(prompt="next", width=64, height=64, steps=2)
        ),
        timeout=60,
    )
    assert follow_up.result.timings.queue_wait.ToNanoseconds() < 1e9
    assert demo_server.active_jobs() == []


def test_queued_job_cancelled_leaves_the_queue_without_running(stub, demo_server):
    running = stub.StreamGenerate(pb.StreamGenerateRequest(parameters=LONG_JOB), timeout=120)
    first = next(running)  # queued: the long job holds the replica
    queued_call = stub.StreamGenerate(
        pb.StreamGenerateRequest(
            parameters=pb.GenerationParameters(prompt="waits", width=64, height=64)
        ),
        timeout=120,
    )
    queued_event = next(queued_call)
    assert queued_event.HasField("queued")

    queued_call.cancel()
    waiting = demo_server.wait_job_finished(queued_event.job_id)
    running.cancel()
    long_job = demo_server.wait_job_finished(first.job_id)

    assert waiting.state is JobState.CANCELLED
    assert waiting.started_at is None, "a job cancelled in the queue must never start"
    assert long_job.state is JobState.CANCELLED
    assert demo_server.active_jobs() == []
