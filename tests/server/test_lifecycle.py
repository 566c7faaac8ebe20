"""`pointillist serve` as a real process: health follows warm-up, reflection, SIGTERM drains."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from tests.holds import HOLD_ENV, new_hold

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServeProcess:
    """`pointillist serve` on a free port; its log lines are collected by a reader thread.

    Its worker inherits HOLD_ENV, so a test can hold a job there (tests/holds.py).
    """

    def __init__(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pointillist.cli", "serve", "--address", "127.0.0.1:0", *extra],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **HOLD_ENV},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_for_port()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def _wait_for_port(self, timeout: float = 60.0) -> int:
        while True:
            line = self.lines.get(timeout=timeout)
            if match := re.search(r"listening on .* \(port (\d+)\)", line):
                return int(match.group(1))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def watch_health(channel: grpc.Channel, until: int, timeout: float = 240.0) -> None:
    """Follow the health Watch stream until it reports ``until``."""
    stub = health_pb2_grpc.HealthStub(channel)
    for response in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout):
        if response.status == until:
            return


@pytest.fixture
def serve_process() -> Iterator[ServeProcess]:
    server = ServeProcess()
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(30)


def test_health_goes_serving_after_warm_up_and_reflection_lists_the_service(serve_process):
    with grpc.insecure_channel(serve_process.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        first = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert first.status == NOT_SERVING  # the worker is still loading torch and the model

        watch_health(channel, SERVING)
        named = health.Check(
            health_pb2.HealthCheckRequest(service="pointillist.v1.GenerationService"), timeout=10
        )
        assert named.status == SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        services = {service.name for service in answer.list_services_response.service}
        assert "pointillist.v1.GenerationService" in services
        assert "grpc.health.v1.Health" in services


def test_sigterm_finishes_accepted_work_refuses_new_work_and_exits_zero(serve_process):
    with grpc.insecure_channel(serve_process.address) as channel:
        watch_health(channel, SERVING)
        stub = pb_grpc.GenerationServiceStub(channel)
        # Held after step 1 until released: still running when the signal arrives, on any
        # machine, so the drain really has accepted work to finish.
        hold = new_hold("finish-me")
        job = pb.GenerationParameters(prompt=hold.prompt, width=64, height=64, steps=4, seed=1)
        call = stub.StreamGenerate(pb.StreamGenerateRequest(parameters=job), timeout=120)
        events = iter(call)
        while not next(events).HasField("progress"):
            pass

        serve_process.process.send_signal(signal.SIGTERM)
        watch_health(channel, NOT_SERVING, timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Generate(
                pb.GenerateRequest(parameters=pb.GenerationParameters(prompt="too late")),
                timeout=30,
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert serve_process.process.poll() is None, "the server left before its job finished"

        hold.release()
        rest = list(events)
        assert rest[-1].HasField("result")
        assert [e.progress.step for e in rest if e.HasField("progress")] == [2, 3, 4]

    assert serve_process.process.wait(timeout=60) == 0
