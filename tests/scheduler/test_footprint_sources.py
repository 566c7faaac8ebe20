"""Which figure a replica's footprint comes from: NVML's per-process memory, else the worker's own
GPU measurement, else its resident memory.

The fleet runs on the production NvmlInventory over the fake NVML driver (tests.scheduler.fake_nvml)
with real demo workers. This machine has no GPU, so the workers run on the CPU and report a GPU
figure through POINTILLIST_FAULT_DEVICE_MEMORY_BYTES (engine.faults); the worker's real measurement
is tested in tests/engine/test_device_memory.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

from engine.config import demo_model_config
from engine.faults import DEVICE_MEMORY_ENV
from scheduler.fleet import FleetScheduler, FleetSettings
from scheduler.footprints import MemorySource, ReplicaMemory, replica_memory
from scheduler.inventory import DeviceSnapshot
from scheduler.nvml_inventory import NvmlInventory
from tests.scheduler.fake_nvml import FakeGpu, make_fake_nvml
from tests.scheduler.test_fleet import FAST, STARTUP_S, WORKER_ENV

GIB = 1 << 30
HOST_PID = 4_000_001  # a pid of the host's namespace: NVML lists it, but it is no worker of ours
H100 = "NVIDIA H100 80GB HBM3"
L4 = "NVIDIA L4"


# The choice itself


def test_nvml_per_process_memory_comes_first():
    assert replica_memory("cuda", 5 * GIB, 3 * GIB, GIB) == ReplicaMemory(
        5 * GIB, MemorySource.INVENTORY
    )


def test_without_nvml_the_worker_figure_stands_in_on_a_gpu():
    assert replica_memory("cuda", None, 3 * GIB, GIB) == ReplicaMemory(3 * GIB, MemorySource.WORKER)


def test_with_neither_the_resident_memory_is_left():
    assert replica_memory("cuda", None, None, GIB) == ReplicaMemory(GIB, MemorySource.RESIDENT)


def test_on_the_cpu_a_gpu_figure_never_counts():
    assert replica_memory("cpu", None, 3 * GIB, GIB) == ReplicaMemory(GIB, MemorySource.RESIDENT)


# The fleet with real workers on fake NVML GPUs


class FakeDriverGpus:
    """NvmlInventory over fake NVML GPUs whose replicas run on the CPU (no GPU here).

    ``attributed[uuid]``: bytes NVML reports for each worker attached to that GPU, as a driver
    that sees the worker's pid does. Any other GPU lists no worker of ours, as in a container
    without the host pid namespace.
    """

    def __init__(self, gpus: list[FakeGpu], attributed: dict[str, int]) -> None:
        self.gpus = {gpu.uuid: gpu for gpu in gpus}
        self._attributed = attributed
        self.nvml = NvmlInventory(nvml=make_fake_nvml(gpus))

    def snapshot(self) -> list[DeviceSnapshot]:
        return [
            dataclasses.replace(device, engine_device="cpu", visible_devices=None)
            for device in self.nvml.snapshot()
        ]

    def process_memory(self, device_id: str, pid: int) -> int | None:
        return self.nvml.process_memory(device_id, pid)

    def attach(self, device_id: str, pid: int) -> None:
        if device_id in self._attributed:
            processes = self.gpus[device_id].processes
            assert processes is not None
            processes.append((pid, self._attributed[device_id]))

    def detach(self, device_id: str, pid: int) -> None:
        gpu = self.gpus[device_id]
        gpu.processes = [entry for entry in gpu.processes or [] if entry[0] != pid]


def gpu(uuid: str, name: str, gib: int, processes: list[tuple[int, int | None]]) -> FakeGpu:
    return FakeGpu(uuid=uuid, name=name, total=gib * GIB, used=GIB, processes=processes)


@contextlib.asynccontextmanager
async def fleet_on(
    inventory: FakeDriverGpus, replicas: int, worker_env: dict[str, str]
) -> AsyncIterator[FleetScheduler]:
    config = dataclasses.replace(demo_model_config(), min_replicas=replicas, max_replicas=replicas)
    settings = FleetSettings(**{**FAST, "worker_env": {**WORKER_ENV, **worker_env}})  # type: ignore[arg-type]
    fleet = FleetScheduler([config], inventory, settings)
    await fleet.start()
    try:
        await fleet.wait_until(lambda: len(fleet.replicas("demo")) == replicas, STARTUP_S)
        yield fleet
    finally:
        await fleet.drain(30.0)
        assert fleet.active_jobs() == []
        ours = [
            pid for g in inventory.gpus.values() for pid, _ in g.processes or [] if pid != HOST_PID
        ]
        assert ours == [], "every worker left its device"


def measured(fleet: FleetScheduler, device_name: str) -> int:
    found = fleet.footprints.footprint("demo", device_name)
    assert found is not None and found.measured
    return round(found.bytes / (1 + fleet.footprints.margin))  # within a byte or two: rounding


def replica_memory_on(fleet: FleetScheduler, device_id: str) -> int:
    (status,) = [r for r in fleet.status().replicas if r.device_id == device_id]
    return status.memory_bytes


async def test_nvml_figure_where_it_attributes_the_worker_figure_where_it_lists_no_worker(caplog):
    caplog.set_level(logging.INFO, logger="pointillist.scheduler")
    inventory = FakeDriverGpus(
        [
            gpu("GPU-aaaa", H100, 80, processes=[]),
            gpu("GPU-bbbb", L4, 24, processes=[(HOST_PID, 2 * GIB)]),  # host pids only
        ],
        attributed={"GPU-aaaa": 5 * GIB},
    )
    # Every worker says it holds 3 GiB on its GPU, as a CUDA worker's own measurement would.
    async with fleet_on(inventory, 2, {DEVICE_MEMORY_ENV: str(3 * GIB)}) as fleet:
        await fleet.wait_until(
            lambda: all(fleet.footprints.footprint("demo", n) is not None for n in (H100, L4)),
            STARTUP_S,
        )
        assert {r.device_id for r in fleet.status().replicas} == {"GPU-aaaa", "GPU-bbbb"}

        assert measured(fleet, H100) == pytest.approx(5 * GIB, abs=2)  # NVML's per-process figure
        # The worker's own figure, not its resident memory.
        assert measured(fleet, L4) == pytest.approx(3 * GIB, abs=2)
        assert replica_memory_on(fleet, "GPU-aaaa") == 5 * GIB
        assert replica_memory_on(fleet, "GPU-bbbb") == 3 * GIB
        assert f"on {H100} (source: inventory)" in caplog.text
        assert f"on {L4} (source: worker)" in caplog.text


@pytest.mark.parametrize("processes", [[], [(HOST_PID, 2 * GIB)]], ids=["none", "host-pids"])
async def test_with_no_nvml_figure_and_no_worker_figure_the_resident_memory_is_used(
    processes: list[tuple[int, int | None]], caplog
):
    caplog.set_level(logging.INFO, logger="pointillist.scheduler")
    inventory = FakeDriverGpus([gpu("GPU-aaaa", H100, 80, processes)], attributed={})
    async with fleet_on(inventory, 1, {}) as fleet:
        (replica,) = fleet.replicas("demo")
        assert replica.device_memory_bytes is None  # a CPU worker measures no GPU memory
        await fleet.wait_until(
            lambda: fleet.footprints.footprint("demo", H100) is not None, STARTUP_S
        )

        assert measured(fleet, H100) == pytest.approx(replica.memory_bytes, abs=2)
        assert "(source: resident)" in caplog.text
