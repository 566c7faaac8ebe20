"""Three real `pointillist serve` processes sharing one real redis-server (`job_store`): a job
submitted on one is watched, read and cancelled on the others; a server killed mid-job ends its
job UNAVAILABLE everywhere; identical seeded requests run once across servers."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from bench.redis_process import RedisProcess, free_port
from pointillist import Client
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc, status_pb2, status_pb2_grpc
from scheduler.job import JobState as ServerJobState
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.holds import HOLD_ENV, new_hold
from tests.server.test_job_ownership import ALICE, BOB, KEYS, OPS, not_found_text
from tests.server.test_lifecycle import SERVING, ServeProcess, watch_health

SERVE = (sys.executable, "-m", "pointillist.cli", "serve")
LEASE_S = 3.0
POLL_S = 1.0  # scheduler.shared_jobs.POLL_S: a follower notices a lost lease within it
WATCH_TIMEOUT_S = 120.0


@dataclass
class Server:
    process: ServeProcess
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(
            self.process.address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )

    @property
    def jobs(self) -> jobs_pb2_grpc.JobServiceStub:
        return jobs_pb2_grpc.JobServiceStub(self.channel)

    @property
    def generation(self) -> pb_grpc.GenerationServiceStub:
        return pb_grpc.GenerationServiceStub(self.channel)

    def running_jobs(self) -> int:
        status = status_pb2_grpc.StatusServiceStub(self.channel).GetServerStatus(
            status_pb2.GetServerStatusRequest(), timeout=10
        )
        return sum(model.running_jobs + model.queued_jobs for model in status.models)

    def stop(self) -> None:
        self.channel.close()
        if self.process.process.poll() is None:
            self.process.process.kill()
        self.process.process.wait(60)


def start_server(config: Path) -> Server:
    server = Server(ServeProcess("--config", str(config)))
    watch_health(server.channel, SERVING)
    return server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    process = RedisProcess().start()
    yield process.url
    process.kill()


@pytest.fixture(scope="module")
def config(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shared-jobs") / "pointillist.toml"
    path.write_text(
        "[server]\n"
        f'job_store = "{redis_url}"\n'
        f"job_lease_s = {LEASE_S}\n"
        f'result_cache = "{redis_url}"\n'
        "drain_grace_s = 5\n"
    )
    return path


@pytest.fixture(scope="module")
def servers(config: Path) -> Iterator[list[Server]]:
    assert HOLD_ENV  # ServeProcess hands it to the servers' workers (tests.holds)
    started: list[Server] = []
    try:
        for _ in range(3):
            started.append(start_server(config))
        yield started
    finally:
        for server in started:
            server.stop()


class Watcher:
    """A WatchJob stream read on its own thread: the events, and how it ended."""

    def __init__(self, server: Server, job_id: str) -> None:
        self.events: list[jobs_pb2.WatchJobResponse] = []
        self.progressed = threading.Event()
        self.error: grpc.RpcError | None = None
        self.ended_at: float | None = None
        self._call = server.jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), timeout=WATCH_TIMEOUT_S
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._call:
                self.events.append(event)
                if event.HasField("progress"):
                    self.progressed.set()
        except grpc.RpcError as err:
            self.error = err
        self.ended_at = time.monotonic()
        self.progressed.set()  # also wakes a test waiting for progress that never comes

    def wait_progress(self) -> None:
        assert self.progressed.wait(WATCH_TIMEOUT_S), "no progress event"
        assert self.error is None, self.error

    def wait_end(self) -> None:
        self._thread.join(WATCH_TIMEOUT_S + 10)
        assert not self._thread.is_alive(), "the watcher never ended"

    @property
    def code(self) -> grpc.StatusCode:
        return self.error.code() if self.error is not None else grpc.StatusCode.OK

    def last_step(self) -> int:
        return max((e.progress.step for e in self.events if e.HasField("progress")), default=0)


def held_parameters(prompt: str, seed: int | None = None) -> pb.GenerationParameters:
    parameters = pb.GenerationParameters(prompt=prompt, width=64, height=64, steps=4)
    if seed is not None:
        parameters.seed = seed
    return parameters


def test_a_job_is_watched_read_and_cancelled_from_the_other_servers(servers):
    a, b, c = servers
    hold = new_hold("shared")
    job_id = a.jobs.SubmitJob(
        jobs_pb2.SubmitJobRequest(parameters=held_parameters(hold.prompt)), timeout=30
    ).job_id
    watchers = [Watcher(b, job_id), Watcher(c, job_id)]
    for watcher in watchers:
        watcher.wait_progress()  # the job runs on A, held after its first step

    job = c.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10).job
    assert job.state == jobs_pb2.JOB_STATE_RUNNING
    assert job.progress.step == 1 and job.HasField("start_time")
    assert a.running_jobs() == 1 and b.running_jobs() == 0 and c.running_jobs() == 0

    cancelled = b.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=30).job
    assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED, "B waited for A to stop the job"
    assert cancelled.cancel_requested
    for watcher in watchers:
        watcher.wait_end()
        assert watcher.code == grpc.StatusCode.CANCELLED, watcher.error
        assert watcher.last_step() <= 2, "the cancel reached A within one step"
    for server in servers:
        seen = server.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10).job
        assert seen.state == jobs_pb2.JOB_STATE_CANCELLED
        assert seen.error.code == grpc.StatusCode.CANCELLED.value[0]

    # An id no server knows is NOT_FOUND everywhere.
    with pytest.raises(grpc.RpcError) as unknown:
        c.jobs.GetJob(jobs_pb2.GetJobRequest(job_id="0" * 32), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_identical_seeded_request_on_another_server_runs_once(servers):
    a, b, c = servers
    hold = new_hold("flight")
    parameters = held_parameters(hold.prompt, seed=4242)
    first = a.generation.StreamGenerate(
        pb.StreamGenerateRequest(parameters=parameters), timeout=WATCH_TIMEOUT_S
    )
    while not next(first).HasField("progress"):
        pass  # A runs it, held after step 1
    second = b.generation.StreamGenerate(
        pb.StreamGenerateRequest(parameters=parameters), timeout=WATCH_TIMEOUT_S
    )
    while not next(second).HasField("progress"):
        pass  # B follows A's run: it has the progress A published
    assert a.running_jobs() == 1
    assert b.running_jobs() == 0, "B ran the request itself instead of following A's run"

    hold.release()
    results = [
        [event.result for event in stream if event.HasField("result")][-1]
        for stream in (first, second)
    ]
    assert [image.data for image in results[0].images] == [
        image.data for image in results[1].images
    ]
    assert b.running_jobs() == 0

    # Later, on the third server: a hit in the shared result cache, nothing runs.
    third = c.generation.Generate(pb.GenerateRequest(parameters=parameters), timeout=60)
    assert third.result.cached
    assert [image.data for image in third.result.images] == [
        image.data for image in results[0].images
    ]


def test_a_killed_server_s_job_ends_unavailable_on_every_other_server(servers, config):
    _, b, c = servers
    doomed = start_server(config)
    try:
        hold = new_hold("killed")
        job_id = doomed.jobs.SubmitJob(
            jobs_pb2.SubmitJobRequest(parameters=held_parameters(hold.prompt)), timeout=30
        ).job_id
        watchers = [Watcher(b, job_id), Watcher(c, job_id), Watcher(c, job_id)]
        for watcher in watchers:
            watcher.wait_progress()
        doomed.process.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        for watcher in watchers:
            watcher.wait_end()
            assert watcher.code == grpc.StatusCode.UNAVAILABLE, watcher.error
            assert watcher.error is not None
            assert "stopped" in (watcher.error.details() or "")
            status = rpc_status.from_call(watcher.error)
            assert status is not None and "JOB_SERVER_LOST" in str(status.details)
            assert watcher.ended_at is not None
            # Within the lease: the lease lapses at most LEASE_S after the kill and a follower
            # looks at it every POLL_S; the margin is for starting the streams' threads.
            assert watcher.ended_at - killed_at < LEASE_S + POLL_S + 10
        job = b.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10).job
        assert job.state == jobs_pb2.JOB_STATE_FAILED
        assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        hold.release()  # the killed server's worker, if it outlived its parent, ends too
    finally:
        doomed.stop()


def test_ownership_holds_across_servers(redis_url):
    """With API keys, a job submitted on A by Alice is NOT_FOUND for Bob on B (get, watch,
    cancel), exactly like an id that never existed; an admin key on B sees it."""
    keyed = [
        ServerThread(demo_settings(api_keys=KEYS, job_store=redis_url, job_lease_s=LEASE_S))
        for _ in range(2)
    ]
    try:
        a, b = (server.start() for server in keyed)
        hold = new_hold("owned-shared")
        with (
            Client(a.address, api_key=ALICE, timeout=60) as alice_on_a,
            Client(b.address, api_key=ALICE, timeout=60) as alice_on_b,
            Client(b.address, api_key=BOB, timeout=60) as bob_on_b,
            Client(b.address, api_key=OPS, timeout=60) as ops_on_b,
        ):
            job_id = alice_on_a.submit(hold.prompt, width=64, height=64, steps=4)
            never = "0" * len(job_id)
            calls: dict[str, Callable[[str], object]] = {
                "get": bob_on_b.get_job,
                "cancel": bob_on_b.cancel_job,
                "watch": lambda job: bob_on_b.watch(job).result(),
            }
            for name, call in calls.items():
                real, unknown = not_found_text(call, job_id), not_found_text(call, never)
                assert real.replace(job_id, "<id>") == unknown.replace(never, "<id>"), name
            assert ops_on_b.get_job(job_id).id == job_id  # an admin sees every job
            assert alice_on_b.get_job(job_id).id == job_id
            # Bob's cancel did nothing: the job still runs on A.
            assert a.scheduler.get_job(job_id).state is ServerJobState.RUNNING
            alice_on_b.cancel_job(job_id)  # the owner may cancel it from any server
        assert a.wait_job_finished(job_id).state is ServerJobState.CANCELLED
    finally:
        for server in keyed:
            server.stop()


def test_a_server_whose_job_store_is_down_does_not_start(tmp_path):
    """Its jobs would be invisible to the other servers: it says so and exits 1."""
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    serve = subprocess.run(
        [*SERVE, "--address", "127.0.0.1:0", "--job-store", closed, "--inventory", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert serve.returncode == 1
    assert f"job store {closed}" in serve.stderr and "Traceback" not in serve.stderr
