"""grpc.health.v1 follows capacity: a server whose only replica is dead is NOT_SERVING.

One real server with one demo replica and a real channel. The tests wait on the Health Watch
stream itself (every status it sends, recorded on a thread), never on a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.background import ServerThread
from tests.conftest import demo_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GENERATION = "pointillist.v1.GenerationService"
JOBS = "pointillist.v1.JobService"
STATUS = "pointillist.v1.StatusService"
EVERY_SERVICE = ("", GENERATION, JOBS, STATUS)
WAIT_S = 120.0  # a generous bound for a worker restart on a busy CPU, not an expected time


class HealthWatch:
    """One Health.Watch stream, read on a thread: ``seen`` holds every status it sent."""

    def __init__(self, channel: grpc.Channel, service: str) -> None:
        self.service = service
        self.seen: list[int] = []
        self._ended = False
        self._changed = threading.Condition()
        stub = health_pb2_grpc.HealthStub(channel)
        self._call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=600)
        self._reader = threading.Thread(target=self._read, name=f"watch {service!r}")
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                with self._changed:
                    self.seen.append(response.status)
                    self._changed.notify_all()
        except grpc.RpcError:
            pass  # cancelled by close(), or the server went away
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def wait_for(self, status: int, after: int = 0) -> int:
        """The index in ``seen`` at which ``status`` arrived (searching from ``after``)."""
        with self._changed:
            self._changed.wait_for(lambda: status in self.seen[after:] or self._ended, WAIT_S)
            assert status in self.seen[after:], f"{self.service!r} sent only {self.seen}"
            return self.seen.index(status, after)

    def close(self) -> None:
        self._call.cancel()
        self._reader.join(30)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(demo_settings()).start()
    yield running
    running.stop()


@pytest.fixture
def health(server: ServerThread) -> Iterator[health_pb2_grpc.HealthStub]:
    with server.channel() as channel:
        yield health_pb2_grpc.HealthStub(channel)


def replica_pid(server: ServerThread) -> int:
    async def pid() -> int | None:
        replicas = server.scheduler.replicas("demo")
        assert len(replicas) == 1, replicas
        found: int | None = replicas[0].pid
        return found

    found = server.call(pid())
    assert found is not None
    return found


def test_status_service_answers_serving(health):
    response = health.Check(health_pb2.HealthCheckRequest(service=STATUS), timeout=10)
    assert response.status == SERVING


def test_list_returns_every_service_with_its_status(health):
    response = health.List(health_pb2.HealthListRequest(), timeout=10)
    assert {name: entry.status for name, entry in response.statuses.items()} == {
        service: SERVING for service in EVERY_SERVICE
    }


def test_health_is_not_serving_while_the_only_replica_is_dead_and_serving_once_it_is_back(
    server, health
):
    with server.channel() as channel:
        watches = {service: HealthWatch(channel, service) for service in EVERY_SERVICE}
        try:
            for watch in watches.values():
                assert watch.wait_for(SERVING) == 0
            victim = replica_pid(server)
            os.kill(victim, signal.SIGKILL)

            for service in ("", GENERATION):
                down = watches[service].wait_for(NOT_SERVING)
                # The services that answer without a replica say so while it is down.
                for up in (JOBS, STATUS):
                    check = health.Check(health_pb2.HealthCheckRequest(service=up), timeout=10)
                    assert check.status == SERVING, up
                watches[service].wait_for(SERVING, after=down)  # the fleet restarted it
            assert replica_pid(server) != victim
        finally:
            for watch in watches.values():
                watch.close()
    assert watches[JOBS].seen == [SERVING]
    assert watches[STATUS].seen == [SERVING]
    for service in ("", GENERATION):
        assert watches[service].seen == [SERVING, NOT_SERVING, SERVING], service


def test_drain_sets_every_service_not_serving_and_stops_following_capacity(caplog):
    server = ServerThread(demo_settings()).start()  # its own: the drain stops it
    with server.channel() as channel, caplog.at_level(logging.DEBUG):
        watches = {service: HealthWatch(channel, service) for service in EVERY_SERVICE}
        try:
            for watch in watches.values():
                watch.wait_for(SERVING)
            server.stop()
            for watch in watches.values():
                watch.wait_for(NOT_SERVING)
        finally:
            for watch in watches.values():
                watch.close()
    assert "Traceback" not in caplog.text
    assert "CancelledError" not in caplog.text
    assert [task for task in asyncio.all_tasks(server.loop) if task.get_name() == "health"] == []


def test_a_model_that_scales_from_zero_is_serving_with_no_replica():
    settings = demo_settings()
    models = tuple(dataclasses.replace(model, min_replicas=0) for model in settings.models)
    server = ServerThread(dataclasses.replace(settings, models=models)).start()
    try:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in EVERY_SERVICE:
                check = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert check.status == SERVING, service
        assert server.call(_replica_count(server)) == 0  # nothing started before a job
    finally:
        server.stop()


async def _replica_count(server: ServerThread) -> int:
    return len(server.scheduler.replicas("demo", ready_only=False))
