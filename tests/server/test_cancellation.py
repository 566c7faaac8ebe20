"""Cancelling a stream stops the denoising within one step and frees the replica at once."""

from __future__ import annotations

import grpc
import pytest

from pointillist.v1 import generation_pb2 as pb
from scheduler.job import JobState
from tests.holds import new_hold

STEPS = 4


def held_job(label: str) -> pb.GenerationParameters:
    """A job held after step 1 until the test releases or cancels it (tests/holds.py)."""
    prompt = new_hold(label).prompt
    return pb.GenerationParameters(prompt=prompt, width=64, height=64, steps=STEPS, seed=7)


def test_cancel_mid_stream_stops_within_one_step_and_the_next_request_runs_at_once(
    stub, demo_server
):
    call = stub.StreamGenerate(pb.StreamGenerateRequest(parameters=held_job("cancel")), timeout=120)
    job_id = ""
    for event in call:
        job_id = event.job_id
        if event.HasField("progress"):  # step 1: the job is held there, still running
            call.cancel()
            break
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED

    job = demo_server.wait_job_finished(job_id)
    assert job.state is JobState.CANCELLED
    assert job.steps_after_cancel is not None and job.steps_after_cancel <= 1
    assert job.completed_steps is not None and job.completed_steps < STEPS

    # The held job is never released: only the cancel can have freed the one replica, so the
    # next request running to its result shows the replica was freed, however slow the machine.
    follow_up = stub.Generate(
        pb.GenerateRequest(
            parameters=pb.GenerationParameters(prompt="next", width=64, height=64, steps=2)
        ),
        timeout=60,
    )
    assert len(follow_up.result.images) == 1
    assert demo_server.active_jobs() == []


def test_queued_job_cancelled_leaves_the_queue_without_running(stub, demo_server):
    running = stub.StreamGenerate(pb.StreamGenerateRequest(parameters=held_job("hog")), timeout=120)
    first = next(running)
    for event in running:
        if event.HasField("progress"):  # held after step 1: the replica stays busy
            break
    queued_call = stub.StreamGenerate(
        pb.StreamGenerateRequest(
            parameters=pb.GenerationParameters(prompt="waits", width=64, height=64, steps=2)
        ),
        timeout=120,
    )
    queued_event = next(queued_call)
    assert queued_event.HasField("queued")

    queued_call.cancel()
    waiting = demo_server.wait_job_finished(queued_event.job_id)
    running.cancel()
    held = demo_server.wait_job_finished(first.job_id)

    assert waiting.state is JobState.CANCELLED
    assert waiting.started_at is None, "a job cancelled in the queue must never start"
    assert held.state is JobState.CANCELLED
    assert demo_server.active_jobs() == []
