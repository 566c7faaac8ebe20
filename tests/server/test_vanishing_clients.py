"""Many clients vanishing mid-stream at once: their jobs are cancelled, nothing is left running,
no server task is left behind, and the worker's memory is back to its baseline."""

from __future__ import annotations

import asyncio

import grpc
import psutil

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.job import JobState

CLIENTS = 8
MEMORY_MARGIN = 0.10


async def _task_count() -> int:
    return len(asyncio.all_tasks())


def test_many_clients_vanishing_mid_stream_at_once_leave_nothing_behind(demo_server):
    (replica,) = demo_server.scheduler.replicas("demo")
    worker = psutil.Process(replica.pid)
    memory_before = worker.memory_info().rss
    tasks_before = demo_server.call(_task_count())
    request = pb.StreamGenerateRequest(
        parameters=pb.GenerationParameters(prompt="vanish", width=256, height=256, steps=100)
    )
    # Each client on its own connection, as separate processes would be.
    channels = [
        grpc.insecure_channel(demo_server.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CLIENTS)
    ]
    calls = [pb_grpc.GenerationServiceStub(ch).StreamGenerate(request) for ch in channels]
    job_ids = [next(call).job_id for call in calls]  # every job accepted (its queued event)
    # Wait for the first batch to run. Callers take turns, so calls[0] may be in a later batch:
    # waiting on its own progress could let the first batch finish before anyone vanishes.
    fleet = demo_server.scheduler
    running = fleet.wait_until(
        lambda: any(fleet.get_job(job_id).state == JobState.RUNNING for job_id in job_ids), 120
    )
    demo_server.call(running, 130)

    assert not any(demo_server.scheduler.get_job(job_id).state.finished for job_id in job_ids)

    for channel in channels:
        channel.close()

    jobs = [demo_server.wait_job_finished(job_id, timeout=120) for job_id in job_ids]
    assert [job.state for job in jobs] == [JobState.CANCELLED] * CLIENTS
    assert demo_server.active_jobs() == []
    assert demo_server.call(_task_count()) <= tasks_before, "an RPC task outlived its client"
    assert abs(worker.memory_info().rss - memory_before) <= MEMORY_MARGIN * memory_before
    # The same worker serves the next caller.
    with demo_server.channel() as channel:
        answer = pb_grpc.GenerationServiceStub(channel).Generate(
            pb.GenerateRequest(
                parameters=pb.GenerationParameters(prompt="after", width=64, height=64, steps=2)
            ),
            timeout=60,
        )
    assert len(answer.result.images) == 1
    assert demo_server.scheduler.replicas("demo")[0].pid == worker.pid
