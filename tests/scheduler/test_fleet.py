"""The packing scheduler with simulated GPUs and real worker processes running the demo model.

Each simulated GPU's memory is real: a worker attached to it counts with its resident memory,
and tests change the other tenants' usage to squeeze or free the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator

import pytest

from engine.config import demo_model_config
from engine.job import GenerationOutput, GenerationSpec
from scheduler.errors import JobDeadlineError, QueueFullError
from scheduler.fleet import FleetScheduler, FleetSettings
from scheduler.job import Job, JobState, Started
from scheduler.simulated_inventory import SimulatedGpu, SimulatedInventory
from tests.holds import HOLD_ENV, new_hold

GIB = 2**30
STARTUP_S = 240.0
RESERVE = GIB // 4
WORKER_ENV = {"POINTILLIST_CPU_THREADS": "1", **HOLD_ENV}
FAST: dict[str, object] = {
    "poll_interval_s": 0.2,
    "reserve_bytes": RESERVE,
    "worker_env": WORKER_ENV,
}


@contextlib.asynccontextmanager
async def fleet_on(
    inventory: SimulatedInventory,
    *,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    **settings: object,
) -> AsyncIterator[FleetScheduler]:
    """A started fleet of demo replicas; on exit every job is cancelled and all is drained."""
    config = dataclasses.replace(
        demo_model_config(), min_replicas=min_replicas, max_replicas=max_replicas
    )
    options = {**FAST, **settings}
    fleet = FleetScheduler([config], inventory, FleetSettings(**options))  # type: ignore[arg-type]
    await fleet.start()
    try:
        await asyncio.wait_for(fleet.wait_ready(), STARTUP_S)
        yield fleet
    finally:
        for job in fleet.active_jobs():
            await fleet.cancel(job.id)
        await fleet.drain(30.0)
        assert fleet.active_jobs() == [], "nothing may be left queued or running"
        assert inventory.snapshot()[0].processes == (), "every worker left its device"


def one_gpu(gib: float = 16.0) -> SimulatedInventory:
    return SimulatedInventory([SimulatedGpu.of_gib("sim-0", gib)])


def spec(prompt: str = "a cat", *, seed: int = 0, steps: int = 2, size: int = 64) -> GenerationSpec:
    return GenerationSpec(
        model="demo", prompt=prompt, negative_prompt="", width=size, height=size,
        steps=steps, guidance_scale=4.5, seed=seed,
    )  # fmt: skip


def long_spec(prompt: str = "long") -> GenerationSpec:
    """A job that stays running after its first step until it is cancelled (``tests.holds``),
    however fast the machine is: ``fleet_on`` cancels it at the end."""
    return spec(new_hold(prompt).prompt, steps=4)


async def finished(job: Job, timeout: float = 120.0) -> GenerationOutput:
    async with asyncio.timeout(timeout):
        async for event in job.events():
            if isinstance(event, GenerationOutput):
                return event
    raise AssertionError("the job ended without a result")


def starts(job: Job) -> list[Started]:
    return [event for event in job.history if isinstance(event, Started)]


async def replica_count(fleet: FleetScheduler, count: int, *, ready_only: bool = True) -> None:
    await fleet.wait_until(
        lambda: len(fleet.replicas("demo", ready_only=ready_only)) == count, STARTUP_S
    )


def footprint(fleet: FleetScheduler, inventory: SimulatedInventory) -> int:
    found = fleet.footprints.footprint("demo", inventory.snapshot()[0].name)
    assert found is not None and found.measured
    return found.bytes


async def test_two_replicas_serve_two_requests_at_once():
    # Batching off: two compatible jobs would otherwise share one pipeline call.
    async with fleet_on(one_gpu(), min_replicas=2, max_replicas=2, max_batch_size=1) as fleet:
        await replica_count(fleet, 2)
        jobs = [fleet.submit(long_spec(f"long {i}")) for i in range(2)]
        await fleet.wait_until(lambda: all(j.state is JobState.RUNNING for j in jobs), 60)

        assert {starts(job)[0].replica_id for job in jobs} == {
            replica.id for replica in fleet.replicas("demo")
        }


async def test_a_model_spreads_across_devices_before_doubling_up():
    gpus = SimulatedInventory([SimulatedGpu.of_gib("sim-0", 16), SimulatedGpu.of_gib("sim-1", 16)])
    async with fleet_on(gpus, min_replicas=2, max_replicas=2) as fleet:
        await replica_count(fleet, 2)

        assert {device.id for device in gpus.snapshot() if device.processes} == {"sim-0", "sim-1"}


async def test_growth_never_overcommits_and_freed_memory_adds_a_replica_for_waiting_work():
    inventory = one_gpu(64)
    async with fleet_on(inventory, min_replicas=1) as fleet:
        size = footprint(fleet, inventory)
        # Room for this replica and half another: no second replica fits.
        inventory.set_tenant_usage("sim-0", 64 * GIB - RESERVE - int(1.5 * size))
        jobs = [fleet.submit(long_spec(f"waiting {i}")) for i in range(3)]
        fleet.replan_now()
        assert len(fleet.replicas("demo", ready_only=False)) == 1

        inventory.set_tenant_usage("sim-0", 64 * GIB - RESERVE - int(2.6 * size))
        fleet.replan_now()
        await replica_count(fleet, 2)
        fleet.replan_now()  # two fit, a third does not: the fleet stops there

        assert len(fleet.replicas("demo", ready_only=False)) == 2
        device = inventory.snapshot()[0]
        assert device.free_bytes >= 0 and len(device.processes) == 2
        for job in jobs:
            await fleet.cancel(job.id)


async def test_another_tenant_growing_drains_a_replica():
    inventory = one_gpu(64)
    async with fleet_on(inventory, min_replicas=2, max_replicas=2) as fleet:
        await replica_count(fleet, 2)
        size = footprint(fleet, inventory)

        inventory.set_tenant_usage("sim-0", 64 * GIB - RESERVE - int(1.5 * size))
        fleet.replan_now()
        await replica_count(fleet, 1, ready_only=False)
        await fleet.wait_until(lambda: len(inventory.snapshot()[0].processes) == 1, 60)
        fleet.replan_now()  # below its minimum, but nothing fits: no replica comes back

        assert len(fleet.replicas("demo", ready_only=False)) == 1


async def test_a_batch_gives_each_caller_the_image_it_would_get_alone():
    async with fleet_on(one_gpu(), max_replicas=1, max_batch_size=4) as fleet:
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        members = [
            fleet.submit(spec(f"member {i}", seed=100 + i, steps=3), caller=f"caller-{i}")
            for i in range(3)
        ]
        await fleet.cancel(blocker.id)
        batched = [await finished(job) for job in members]

        assert [starts(job)[0].batch_size for job in members] == [3, 3, 3]
        for job, output in zip(members, batched, strict=True):
            alone = fleet.submit(job.spec)
            solo = await finished(alone)
            assert starts(alone)[0].batch_size == 1
            assert [image.data for image in solo.images] == [image.data for image in output.images]


async def test_a_killed_worker_job_runs_again_on_another_replica_and_completes():
    async with fleet_on(one_gpu(), min_replicas=2, max_replicas=2) as fleet:
        await replica_count(fleet, 2)
        hold = new_hold("survive")
        job = fleet.submit(spec(hold.prompt, steps=4))
        await fleet.wait_until(lambda: _progressed(job), 60)  # held after step 1: still running
        victim = next(r for r in fleet.replicas("demo") if r.id == starts(job)[0].replica_id)
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        # Released only once the rerun has started, so the killed worker cannot finish it first.
        await fleet.wait_until(lambda: len(starts(job)) == 2, 60)
        hold.release()

        output = await finished(job)

        assert job.attempts == 2 and len(output.images) == 1
        first, second = starts(job)
        assert first.replica_id != second.replica_id  # the other replica took it at once
        await replica_count(fleet, 2)  # and the killed one was restarted


def _progressed(job: Job) -> bool:
    return any(type(event).__name__ == "StepProgress" for event in job.history)


async def test_an_injected_out_of_memory_splits_the_batch_and_loses_nothing():
    async with fleet_on(
        one_gpu(),
        max_replicas=1,
        max_batch_size=4,
        worker_env={**WORKER_ENV, "POINTILLIST_FAULT_OOM_ABOVE_IMAGES": "1"},
    ) as fleet:
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        members = [fleet.submit(spec(f"m{i}", seed=i), caller=f"c{i}") for i in range(2)]
        await fleet.cancel(blocker.id)

        outputs = [await finished(job) for job in members]

        assert all(len(output.images) == 1 for output in outputs)
        for job in members:
            assert [start.batch_size for start in starts(job)] == [2, 1]


async def test_a_full_queue_refuses_with_a_retry_delay_and_hopeless_deadlines_at_once():
    async with fleet_on(one_gpu(), max_replicas=1, queue_capacity=1) as fleet:
        await finished(fleet.submit(spec("measure throughput", steps=20, size=256)))
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        waiting = fleet.submit(spec("waits"))

        with pytest.raises(QueueFullError) as full:
            fleet.submit(spec("one too many"))
        assert full.value.retry_after_s >= 1.0
        await fleet.cancel(waiting.id)
        loop = asyncio.get_running_loop()
        with pytest.raises(JobDeadlineError):
            # Never run: no estimate says 100 steps at 512x512 end within a millisecond.
            fleet.submit(spec("too late", steps=100, size=512), deadline=loop.time() + 0.001)
        assert waiting.state is JobState.CANCELLED and waiting.started_at is None


async def test_waiting_work_grows_a_model_and_idleness_shrinks_it_to_its_minimum():
    async with fleet_on(
        one_gpu(), min_replicas=1, max_replicas=2, max_batch_size=1, idle_scale_down_s=0.5
    ) as fleet:
        jobs = [fleet.submit(long_spec(f"waiting {i}")) for i in range(3)]
        await replica_count(fleet, 2)
        for job in jobs:
            await fleet.cancel(job.id)

        await replica_count(fleet, 1, ready_only=False)
