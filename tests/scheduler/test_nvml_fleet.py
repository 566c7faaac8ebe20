"""The fleet on a real GPU through real NVML: three demo replicas packed on one device, each
with a footprint NVML measured, serving three requests at once. Skipped without CUDA and NVML
(``scripts/gpu-check.sh`` runs it on a GPU machine)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.config import demo_model_config
from scheduler.fleet import FleetScheduler, FleetSettings
from scheduler.job import JobState
from scheduler.nvml_inventory import InventoryError, NvmlInventory
from tests.holds import HOLD_ENV
from tests.scheduler.test_fleet import STARTUP_S, long_spec, starts

REPLICAS = 3


@pytest.fixture
def nvml() -> NvmlInventory:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    try:
        inventory = NvmlInventory()
    except InventoryError as exc:
        pytest.skip(f"needs NVML: {exc}")
    if not inventory.snapshot():
        pytest.skip("NVML lists no GPU")
    return inventory


async def test_three_demo_replicas_on_one_gpu_measured_by_nvml(nvml: NvmlInventory) -> None:
    gpu = nvml.snapshot()[0]
    config = dataclasses.replace(
        demo_model_config(), device="cuda", min_replicas=REPLICAS, max_replicas=REPLICAS
    )
    settings = FleetSettings(poll_interval_s=0.2, max_batch_size=1, worker_env=dict(HOLD_ENV))
    fleet = FleetScheduler([config], nvml, settings)
    await fleet.start()
    try:
        await fleet.wait_until(lambda: len(fleet.replicas("demo")) == REPLICAS, STARTUP_S)
        replicas = fleet.replicas("demo")
        for replica in replicas:
            assert replica.pid is not None
            held = nvml.process_memory(gpu.id, replica.pid)
            assert held is not None and held > 0, f"NVML sees no memory for {replica.id}"
            assert replica.device_memory_bytes, "the worker measured its device memory"
        footprint = fleet.footprints.footprint("demo", gpu.name)
        assert footprint is not None and footprint.measured
        jobs = [fleet.submit(long_spec(f"nvml {i}"), caller=f"c{i}") for i in range(REPLICAS)]
        await fleet.wait_until(lambda: all(j.state is JobState.RUNNING for j in jobs), 120)
        assert {starts(job)[0].replica_id for job in jobs} == {r.id for r in replicas}
    finally:
        for job in fleet.active_jobs():
            await fleet.cancel(job.id)
        await fleet.drain(30.0)
        nvml.close()
    assert fleet.active_jobs() == []
