"""SIGTERM on a real `pointillist serve` process: past the grace, running jobs end with a clear
status, the worker exits and so does the server, with 0. A second SIGTERM exits at once, with 1."""

from __future__ import annotations

import signal

import grpc
import psutil
import pytest

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import status_pb2, status_pb2_grpc
from tests.holds import new_hold
from tests.server.test_lifecycle import NOT_SERVING, SERVING, ServeProcess, watch_health


def worker_pid(channel: grpc.Channel) -> int:
    status = status_pb2_grpc.StatusServiceStub(channel).GetServerStatus(
        status_pb2.GetServerStatusRequest(), timeout=10
    )
    (replica,) = status.replicas
    return int(replica.pid)


def gone(pid: int, timeout: float) -> bool:
    """Whether the process has exited (or is a zombie nobody reaped) within ``timeout``."""
    try:
        process = psutil.Process(pid)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    return True


def start_held_job(channel: grpc.Channel) -> grpc.Call:
    """A job held after its first step and never released (tests/holds.py): it cannot finish
    on its own, so only the shutdown can end it, however fast the machine is."""
    held = pb.GenerationParameters(prompt=new_hold("shutdown").prompt, width=64, height=64, steps=4)
    call = pb_grpc.GenerationServiceStub(channel).StreamGenerate(
        pb.StreamGenerateRequest(parameters=held), timeout=240
    )
    while not next(call).HasField("progress"):
        pass
    return call


def test_past_the_grace_a_running_job_ends_unavailable_and_the_server_exits_zero():
    server = ServeProcess("--drain-grace", "1")
    try:
        with grpc.insecure_channel(server.address) as channel:
            watch_health(channel, SERVING)
            pid = worker_pid(channel)
            call = start_held_job(channel)

            server.process.send_signal(signal.SIGTERM)
            watch_health(channel, NOT_SERVING, timeout=30)
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.GenerationServiceStub(channel).Generate(
                    pb.GenerateRequest(parameters=pb.GenerationParameters(prompt="late")),
                    timeout=30,
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.RpcError) as ended:
                for _ in call:
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shut down before the job finished" in (ended.value.details() or "")

        # The held job never ends by itself: the server exiting shows it did not wait past the
        # grace for it.
        assert server.process.wait(timeout=120) == 0
        assert gone(pid, timeout=10), "the worker outlived the server"
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)


def test_a_second_sigterm_exits_at_once_and_the_worker_follows():
    # A grace far longer than the wait below, and a held job that never ends by itself: the
    # server exiting within the wait shows the second signal did not wait for the first's grace.
    server = ServeProcess("--drain-grace", "600")
    try:
        with grpc.insecure_channel(server.address) as channel:
            watch_health(channel, SERVING)
            pid = worker_pid(channel)
            call = start_held_job(channel)

            server.process.send_signal(signal.SIGTERM)
            watch_health(channel, NOT_SERVING, timeout=30)
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=120) == 1
            with pytest.raises(grpc.RpcError) as cut:
                for _ in call:
                    pass
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE

        # The worker sees its socket close, stops (the hold ends with the socket) and exits.
        assert gone(pid, timeout=60), "the worker outlived the server"
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)
