"""``pointillist plan`` and the running server place the same replicas on the same devices.

For each inventory, one server config file: the real server starts from it (real gRPC, real demo
worker processes on simulated GPUs or the host) and, once its placement has settled, its
replicas per device (read with GetServerStatus) must be what the plan's code path
(``server.plan_cli.plan_placement``) computes from the same file and inventory, with the
footprint the server measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from engine.job import GenerationSpec
from pointillist.v1 import status_pb2 as status_pb
from pointillist.v1 import status_pb2_grpc as status_grpc
from scheduler.fleet import FleetScheduler
from scheduler.job import Job, JobState
from scheduler.placement import Placement
from scheduler.simulated_inventory import load_inventory
from server.background import ServerThread
from server.plan_cli import plan_placement
from server.settings import load_settings
from tests.holds import HOLD_ENV, new_hold

SETTLE_S = 240.0
WORKER_ENV = {"POINTILLIST_CPU_THREADS": "1", **HOLD_ENV}

DEMO = 'source = "demo"\n'
SCENARIOS = {
    # Two equal GPUs, two replicas: one on each.
    "spread": (
        '[[gpus]]\nid = "sim-0"\nmemory_gib = 16.0\n[[gpus]]\nid = "sim-1"\nmemory_gib = 16.0\n',
        f'[[models]]\nid = "demo"\n{DEMO}min_replicas = 2\nmax_replicas = 2\n',
    ),
    # Three replicas; the middle GPU is full (another tenant): two on the larger free GPU.
    "uneven": (
        '[[gpus]]\nid = "sim-0"\nmemory_gib = 24.0\n'
        '[[gpus]]\nid = "sim-1"\nmemory_gib = 8.0\ntenant_gib = 7.9\n'
        '[[gpus]]\nid = "sim-2"\nmemory_gib = 12.0\ntenant_gib = 2.0\n',
        f'[[models]]\nid = "demo"\n{DEMO}min_replicas = 3\n',
    ),
    # Two models, one GPU each is as good as both on one: they spread.
    "two models": (
        '[[gpus]]\nid = "sim-0"\nmemory_gib = 16.0\n[[gpus]]\nid = "sim-1"\nmemory_gib = 16.0\n',
        f'[[models]]\nid = "a"\n{DEMO}\n[[models]]\nid = "b"\n{DEMO}',
    ),
    # The host takes one replica (cpu_max_replicas = 1), whatever the minimum asks.
    "host": (
        "cpu",
        f'[[models]]\nid = "demo"\n{DEMO}device = "cpu"\nmin_replicas = 2\n',
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_plan_and_server_place_the_same_replicas(scenario: str, tmp_path: Path) -> None:
    gpus, models = SCENARIOS[scenario]
    with server_from(tmp_path, gpus, models) as (server, inventory):
        assert_agree(server, inventory, under_load=False)


def test_under_load_the_server_grows_to_the_plans_placement(tmp_path: Path) -> None:
    # Every replica holds a job and one more waits: the server grows one replica at a time to
    # what ``plan --under-load`` shows (three: two on the larger GPU).
    gpus = '[[gpus]]\nid = "sim-0"\nmemory_gib = 16.0\n[[gpus]]\nid = "sim-1"\nmemory_gib = 8.0\n'
    models = f'[[models]]\nid = "demo"\n{DEMO}max_replicas = 3\n'
    with server_from(tmp_path, gpus, models, "max_batch_size = 1\n") as (server, inventory):
        fleet = _fleet(server)
        holds = [new_hold(f"load {i}") for i in range(4)]
        jobs = [server.call(_submit(fleet, hold.prompt)) for hold in holds]
        try:
            placement = assert_agree(server, inventory, under_load=True)
            assert placement.per_model() == {"demo": 3}
            assert sum(job.state is JobState.RUNNING for job in jobs) == 3
        finally:
            for job in jobs:
                server.call(fleet.cancel(job.id))


@contextlib.contextmanager
def server_from(
    tmp_path: Path, gpus: str, models: str, scheduler: str = ""
) -> Iterator[tuple[ServerThread, str]]:
    """The real server started from one config file (``gpus``: a simulated-inventory file's
    text, or "cpu"); yields it and its ``inventory`` setting."""
    inventory = "cpu"
    if gpus != "cpu":
        inventory = str(tmp_path / "gpus.toml")
        Path(inventory).write_text(gpus)
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ninventory = "{inventory}"\n\n'
        f"[scheduler]\nreserve_gib = 0.25\n{scheduler}\n{models}"
    )
    settings = load_settings(config, environ={})
    fleet_settings = dataclasses.replace(
        settings.scheduler, poll_interval_s=0.2, worker_env=WORKER_ENV
    )
    server = ServerThread(
        dataclasses.replace(
            settings, address="127.0.0.1:0", result_cache="off", scheduler=fleet_settings
        )
    ).start()
    try:
        yield server, inventory
    finally:
        server.stop()


def assert_agree(server: ServerThread, inventory: str, *, under_load: bool) -> Placement:
    """Wait until the server's placement settles; assert the plan's is the same; return it."""
    fleet = _fleet(server)
    settings = server.settings
    # Settled: every model serving, nothing starting or draining, nothing left to change;
    # and a replan from a fresh inventory read changes nothing.
    server.call(fleet.wait_until(settled(fleet), SETTLE_S), SETTLE_S + 10)
    server.call(_replan(fleet))
    assert server.call(_settled_now(fleet)), "a fresh replan changed the placement"
    with grpc.insecure_channel(server.address) as channel:
        status = status_grpc.StatusServiceStub(channel).GetServerStatus(
            status_pb.GetServerStatusRequest(), timeout=10
        )
    served = _per_device(status)

    footprints = {
        model.model: int(model.footprint_bytes)
        for model in status.models
        if model.footprint_measured
    }
    assert set(footprints) == {model.id for model in settings.models}
    _, planned = plan_placement(
        load_inventory(inventory).snapshot(),
        settings.models,
        footprints,
        reserve_bytes=settings.scheduler.reserve_bytes,
        cpu_max_replicas=settings.scheduler.cpu_max_replicas,
        under_load=under_load,
    )

    assert served == dict(planned.replicas), f"server {served}, plan {planned}"
    assert served, "the scenario places at least one replica"
    return planned


def _fleet(server: ServerThread) -> FleetScheduler:
    assert server.running is not None
    fleet = server.running.scheduler
    assert isinstance(fleet, FleetScheduler)
    return fleet


async def _submit(fleet: FleetScheduler, prompt: str) -> Job:
    spec = GenerationSpec(
        model="demo", prompt=prompt, negative_prompt="", width=64, height=64,
        steps=4, guidance_scale=4.5, seed=0,
    )  # fmt: skip
    return fleet.submit(spec)


def settled(fleet: FleetScheduler) -> Callable[[], bool]:
    def check() -> bool:
        # Every model serving too: its first replica measured before the planner adds more.
        return all(model.ready for model in fleet.models()) and fleet.placement_settled()

    return check


async def _replan(fleet: FleetScheduler) -> None:
    fleet.replan_now()


async def _settled_now(fleet: FleetScheduler) -> bool:
    return fleet.placement_settled()


def _per_device(status: status_pb.GetServerStatusResponse) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for replica in status.replicas:
        key = (replica.device_id, replica.model)
        counts[key] = counts.get(key, 0) + 1
    return counts
