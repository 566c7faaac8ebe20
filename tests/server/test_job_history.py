"""Finished jobs stay bounded: previews dropped, delivered results dropped, a byte budget with
the oldest out first, and expiry on a timer (scheduler/job_registry.py)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from engine.job import StepPreview
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2 as jobs_pb
from pointillist.v1 import jobs_pb2_grpc as jobs_grpc
from scheduler.job import Job
from server.background import ServerThread
from tests.conftest import demo_settings

BUDGET_MIB = 2.0
JOBS = 1000
PARALLEL = 16


def params(seed: int) -> pb.GenerationParameters:
    return pb.GenerationParameters(
        prompt="a lighthouse at dusk",
        width=64,
        height=64,
        steps=2,
        seed=seed,
        preview=pb.PreviewOptions(every_n_steps=1),
    )


def budget_server_thread() -> ServerThread:
    """A demo server with a small history budget and no per-caller limits (one test client)."""
    return ServerThread(
        demo_settings(
            job_history_max_mib=BUDGET_MIB,
            queue_capacity=JOBS,
            max_queued_per_caller=0,
            max_streams_per_caller=0,
        )
    ).start()


@pytest.fixture(scope="module")
def budget_server() -> Iterator[ServerThread]:
    server = budget_server_thread()
    yield server
    server.stop()


def job_of(server: ServerThread, job_id: str) -> Job | None:
    async def lookup() -> Job | None:
        found: Job | None = server.scheduler.jobs.get(job_id)
        return found

    return server.call(lookup())


def registry_bytes(server: ServerThread) -> int:
    async def count() -> int:
        counted: int = server.scheduler.jobs.bytes
        return counted

    return server.call(count())


def run_jobs(server: ServerThread, seeds: range) -> list[str]:
    """Half StreamGenerate (previews on), half SubmitJob then a watch to the end; all finished."""
    with server.channel() as channel:
        stream = pb_grpc.GenerationServiceStub(channel)
        jobs = jobs_grpc.JobServiceStub(channel)

        def one(seed: int) -> str:
            if seed % 2:
                events = list(
                    stream.StreamGenerate(pb.StreamGenerateRequest(parameters=params(seed)))
                )
                assert events[-1].HasField("result")
                return str(events[0].job_id)
            job_id = jobs.SubmitJob(jobs_pb.SubmitJobRequest(parameters=params(seed))).job_id
            watched = list(jobs.WatchJob(jobs_pb.WatchJobRequest(job_id=job_id), timeout=600))
            assert watched[-1].HasField("result")
            return str(job_id)

        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(one, seeds))


def test_a_thousand_finished_jobs_with_previews_stay_within_the_budget():
    # A server of its own, so that nothing another test left behind is counted. The server runs
    # in this process (its workers denoise elsewhere), so tracemalloc sees everything it keeps.
    server = budget_server_thread()
    tracemalloc.start()
    try:
        run_jobs(server, range(PARALLEL))  # channels, stubs and codecs exist before the baseline
        gc.collect()
        baseline, _ = tracemalloc.get_traced_memory()
        run_jobs(server, range(PARALLEL, PARALLEL + JOBS))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
        counted = registry_bytes(server)
    finally:
        tracemalloc.stop()
        server.stop()
    budget = int(BUDGET_MIB * 2**20)
    print(f"1,000 finished jobs: {grown / 2**20:.2f} MiB grown, {counted / 2**20:.2f} MiB counted")
    assert counted <= budget
    # Without the budget the same jobs keep about 38 KiB each (38 MiB); what the counted figure
    # leaves out (allocator slack, interned strings) must stay a fraction of the budget.
    assert grown <= 1.5 * budget


def test_a_late_watcher_gets_state_and_result_without_previews(budget_server):
    with budget_server.channel() as channel:
        jobs = jobs_grpc.JobServiceStub(channel)
        job_id = jobs.SubmitJob(jobs_pb.SubmitJobRequest(parameters=params(5000))).job_id
        budget_server.wait_job_finished(job_id)
        late = list(jobs.WatchJob(jobs_pb.WatchJobRequest(job_id=job_id), timeout=60))
        kinds = [event.WhichOneof("event") for event in late]
        assert kinds == ["queued", "started", "progress", "progress", "result"]
        assert late[-1].result.images[0].data
        got = jobs.GetJob(jobs_pb.GetJobRequest(job_id=job_id), timeout=10).job
        assert got.state == jobs_pb.JOB_STATE_SUCCEEDED
        assert got.result.images[0].data


def test_a_delivered_stream_job_keeps_its_result_not_its_previews(budget_server):
    with budget_server.channel() as channel:
        events = list(
            pb_grpc.GenerationServiceStub(channel).StreamGenerate(
                pb.StreamGenerateRequest(parameters=params(5001)), timeout=60
            )
        )
        job = job_of(budget_server, events[0].job_id)
        assert job is not None and job.state.finished
        # Kept for image references (issue 16); its previews are gone once nobody watches.
        assert job.result is not None and job.result.images[0].data
        assert not any(isinstance(event, StepPreview) for event in job.history)


def test_an_evicted_job_is_not_found_with_a_clear_message(budget_server):
    with budget_server.channel() as channel:
        jobs = jobs_grpc.JobServiceStub(channel)
        first = jobs.SubmitJob(jobs_pb.SubmitJobRequest(parameters=params(6000))).job_id
        budget_server.wait_job_finished(first)
        run_jobs(budget_server, range(6001, 6001 + 200))  # more than the budget holds
        with pytest.raises(grpc.RpcError) as caught:
            list(jobs.WatchJob(jobs_pb.WatchJobRequest(job_id=first), timeout=60))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert first in (caught.value.details() or "")


def test_jobs_expire_with_no_new_submit():
    server = ServerThread(demo_settings(job_retention_s=0.5)).start()
    try:
        with server.channel() as channel:
            jobs = jobs_grpc.JobServiceStub(channel)
            job_id = jobs.SubmitJob(jobs_pb.SubmitJobRequest(parameters=params(1))).job_id
            server.wait_job_finished(job_id)
            registry = server.scheduler.jobs
            server.call(server.scheduler.wait_until(lambda: job_id not in registry, 30))
            with pytest.raises(grpc.RpcError) as caught:
                jobs.GetJob(jobs_pb.GetJobRequest(job_id=job_id), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()
