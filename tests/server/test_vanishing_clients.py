"""Many clients vanishing mid-stream at once: their jobs are cancelled, nothing is left running,
no server task is left behind, and the worker's memory is back to its baseline."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import psutil

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.job import JobState
from tests.holds import new_hold

CLIENTS = 8
MEMORY_MARGIN = 0.10
SIZE = 256


async def _tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks()


async def _task_count_back_to(before: set[asyncio.Task[object]], timeout: float) -> int:
    """The server's task count, once it is back to ``len(before)`` or ``timeout`` has passed.

    RPC tasks end on their own shortly after their calls are gone: this wakes each time a task
    started since ``before`` ends (never on a timer) and counts again. Tasks that merely replaced
    others (timers, queue waits) may stay; only the count matters.
    """
    me = {asyncio.current_task()}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(asyncio.all_tasks() - me) > len(before):
                started = asyncio.all_tasks() - before - me
                await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
    return len(asyncio.all_tasks() - me)


def _generate(demo_server, **fields: object) -> pb.GenerateResponse:
    values: dict[str, object] = {"width": SIZE, "height": SIZE, "steps": 2, **fields}
    with demo_server.channel() as channel:
        return pb_grpc.GenerationServiceStub(channel).Generate(
            pb.GenerateRequest(parameters=pb.GenerationParameters(**values)),  # type: ignore[arg-type]
            timeout=60,
        )


def test_many_clients_vanishing_mid_stream_at_once_leave_nothing_behind(demo_server):
    (replica,) = demo_server.scheduler.replicas("demo")
    worker = psutil.Process(replica.pid)
    # The baseline is taken after the worker ran a full batch of this size once, so that the
    # allocator's high-water mark for it is already in; growth after that would be a leak.
    _generate(demo_server, prompt="warm up", num_images=4)
    memory_before = worker.memory_info().rss
    tasks_before = demo_server.call(_tasks())
    # Each job is held after its first step (tests/holds.py), so none can finish before its
    # client vanishes, however fast the machine is; only the cancels end them.
    requests = [
        pb.StreamGenerateRequest(
            parameters=pb.GenerationParameters(
                prompt=new_hold(f"vanish-{i}").prompt, width=SIZE, height=SIZE, steps=4
            )
        )
        for i in range(CLIENTS)
    ]
    # Each client on its own connection, as separate processes would be.
    channels = [
        grpc.insecure_channel(demo_server.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CLIENTS)
    ]
    calls = [
        pb_grpc.GenerationServiceStub(ch).StreamGenerate(request)
        for ch, request in zip(channels, requests, strict=True)
    ]
    job_ids = [next(call).job_id for call in calls]  # every job accepted (its queued event)
    # Wait for the first batch to run. Callers take turns, so calls[0] may be in a later batch.
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
    # The RPC tasks end on their own once their calls are gone: wait for that, then count.
    tasks_after = demo_server.call(_task_count_back_to(tasks_before, timeout=30), 40)
    assert tasks_after <= len(tasks_before), "an RPC task outlived its client"
    assert abs(worker.memory_info().rss - memory_before) <= MEMORY_MARGIN * memory_before
    # The same worker serves the next caller.
    answer = _generate(demo_server, prompt="after", width=64, height=64)
    assert len(answer.result.images) == 1
    assert demo_server.scheduler.replicas("demo")[0].pid == worker.pid
