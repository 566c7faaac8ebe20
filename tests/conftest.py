"""Shared fixtures: one real demo server per session (a worker process takes seconds to load)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grpc
import pytest

from engine.config import demo_model_config
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.fleet import FleetSettings
from server.background import ServerThread
from server.settings import ServerSettings
from tests.certificates import Pki, make_pki
from tests.holds import HOLD_ENV

SCHEDULER_FIELDS = {field.name for field in dataclasses.fields(FleetSettings)}


def demo_settings(**overrides: object) -> ServerSettings:
    """The demo model on the CPU (also where a GPU exists), on a free loopback port.

    Overrides name ServerSettings fields or FleetSettings fields (e.g. ``job_retention_s``).
    """
    scheduler = {key: overrides.pop(key) for key in list(overrides) if key in SCHEDULER_FIELDS}
    # Every demo worker honours tests.holds (a job held after step 1 until released).
    scheduler["worker_env"] = {**HOLD_ENV, **scheduler.get("worker_env", {})}  # type: ignore[dict-item]
    values: dict[str, object] = {
        "address": "127.0.0.1:0",
        "models": (dataclasses.replace(demo_model_config(), device="cpu"),),
        "drain_grace_s": 10.0,
        "inventory": "cpu",
        "scheduler": FleetSettings(**scheduler),  # type: ignore[arg-type]
        # Off, so that a test sending the same seeded request twice really runs it twice (the
        # cache's own tests turn it on). Identical concurrent requests still run once.
        "result_cache": "off",
    }
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def demo_server() -> Iterator[ServerThread]:
    server = ServerThread(demo_settings()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for localhost and client certificates, made at test time."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def channel(demo_server: ServerThread) -> Iterator[grpc.Channel]:
    with demo_server.channel() as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.GenerationServiceStub:
    return pb_grpc.GenerationServiceStub(channel)


@pytest.fixture(autouse=True)
def nothing_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """Isolation: a test hands the shared server back with nothing queued or running.

    Jobs still finishing (a cancel on its way to the worker) get a moment to end; cancel tests
    check their own jobs' final states explicitly.
    """
    yield
    if "demo_server" in request.fixturenames:
        server: ServerThread = request.getfixturevalue("demo_server")
        for job in server.active_jobs():
            server.wait_job_finished(job.id, timeout=60)
        assert server.active_jobs() == []


@pytest.fixture(scope="session")
def compile_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One inductor cache for every compiled replica of the session: one cold compile in all."""
    return str(tmp_path_factory.mktemp("inductor-cache"))
