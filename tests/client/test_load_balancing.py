"""One client, three real `pointillist serve` processes: the calls spread over all of them, and a
server that drains (SIGTERM) drops out of the rotation without the caller seeing an error."""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from pointillist import Client
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc
from tests.holds import HOLD_ENV, new_hold
from tests.server.test_lifecycle import NOT_SERVING, SERVING, ServeProcess, watch_health

REQUESTS = 60
AFTER_DRAIN = 30


@pytest.fixture
def three_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ServeProcess]]:
    for name, value in HOLD_ENV.items():  # the servers' workers honour tests.holds
        monkeypatch.setenv(name, value)
    # The first one drains in the test: its grace outlasts the job that keeps it draining.
    servers = [ServeProcess("--drain-grace", "240"), ServeProcess(), ServeProcess()]
    try:
        for server in servers:
            with grpc.insecure_channel(server.address) as channel:
                watch_health(channel, SERVING)
        yield servers
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait(60)


def owner(job_id: str, job_stubs: list[jobs_pb2_grpc.JobServiceStub]) -> int:
    """Which server ran the job: the one whose JobService knows it (each keeps its own jobs)."""
    owners = []
    for index, stub in enumerate(job_stubs):
        try:
            stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10)
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE), err
            continue
        owners.append(index)
    assert len(owners) == 1, f"job {job_id} is known to servers {owners}"
    return owners[0]


def test_round_robin_spreads_the_calls_and_a_drained_server_drops_out(three_servers):
    servers = three_servers
    target = "ipv4:" + ",".join(server.address for server in servers)
    channels = [grpc.insecure_channel(server.address) for server in servers]
    job_stubs = [jobs_pb2_grpc.JobServiceStub(channel) for channel in channels]
    with Client(target, timeout=120) as client, contextlib.ExitStack() as closing:
        for channel in channels:
            closing.enter_context(channel)
        served: Counter[int] = Counter()
        for seed in range(REQUESTS):
            result = client.generate("spread", width=64, height=64, steps=1, seed=seed)
            served[owner(result.job_id, job_stubs)] += 1
        assert sorted(served) == [0, 1, 2], f"a server took no call: {served}"
        assert sum(served.values()) == REQUESTS

        # The first server drains: a held job keeps it draining (NOT_SERVING, connections still
        # open, so round_robin still picks it) while the client sends more calls.
        drained = servers[0]
        hold = new_hold("drain")
        with grpc.insecure_channel(drained.address) as channel:
            held = pb_grpc.GenerationServiceStub(channel).StreamGenerate(
                pb.StreamGenerateRequest(
                    parameters=pb.GenerationParameters(prompt=hold.prompt, width=64, height=64)
                ),
                timeout=300,
            )
            while not next(held).HasField("progress"):
                pass
            drained.process.send_signal(signal.SIGTERM)
            watch_health(channel, NOT_SERVING, timeout=60)

            after: Counter[int] = Counter()
            for seed in range(REQUESTS, REQUESTS + AFTER_DRAIN):
                # No error reaches the caller: the draining server refuses with UNAVAILABLE
                # (nothing accepted), and the client's retry policy sends the call elsewhere.
                result = client.generate("spread", width=64, height=64, steps=1, seed=seed)
                after[owner(result.job_id, job_stubs)] += 1
            assert after[0] == 0, f"the draining server accepted calls: {after}"
            assert after[1] > 0 and after[2] > 0 and sum(after.values()) == AFTER_DRAIN

            hold.release()
            assert list(held)[-1].HasField("result"), "the held job finishes within the grace"
        assert drained.process.wait(120) == 0
