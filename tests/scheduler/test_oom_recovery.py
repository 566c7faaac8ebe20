"""Out-of-memory limits are lifted again (issue 13, defect 1), with real worker processes.

An injected OOM (``POINTILLIST_FAULT_OOM_ABOVE_IMAGES``) takes a replica or halves the batch
size; after the cool-down, or once the device has more free memory, the model serves as before.
"""

from __future__ import annotations

import dataclasses

import pytest

from engine.faults import OOM_FAULT_ENV
from engine.job import GenerationSpec
from scheduler.errors import JobOutOfMemoryError
from scheduler.job import JobState
from tests.scheduler.test_fleet import (
    GIB,
    WORKER_ENV,
    finished,
    fleet_on,
    long_spec,
    one_gpu,
    replica_count,
    spec,
    starts,
)

STARTUP_S = 240.0


def images(count: int, prompt: str) -> GenerationSpec:
    return dataclasses.replace(spec(prompt), num_images=count)


async def test_a_single_job_oom_on_the_only_replica_costs_a_cool_down_not_the_model():
    async with fleet_on(
        one_gpu(),
        max_replicas=1,
        max_attempts=1,
        oom_cooldown_s=1.0,
        worker_env={**WORKER_ENV, OOM_FAULT_ENV: "1"},
    ) as fleet:
        (first,) = fleet.replicas("demo")
        too_big = fleet.submit(images(2, "two images do not fit"))
        with pytest.raises(JobOutOfMemoryError):
            await finished(too_big)
        assert too_big.state is JobState.FAILED

        # The cap (no replica here) drained the only replica; after the cool-down the model
        # serves again, on a new one.
        fits = fleet.submit(images(1, "one image fits"))
        output = await finished(fits, timeout=STARTUP_S)
        assert len(output.images) == 1
        assert starts(fits)[0].replica_id != first.id


async def test_freed_device_memory_lifts_the_cap_before_the_cool_down():
    inventory = one_gpu(16)
    inventory.set_tenant_usage("sim-0", 4 * GIB)  # another tenant, using memory for now
    async with fleet_on(
        inventory,
        max_replicas=1,
        max_attempts=1,
        oom_cooldown_s=3600.0,  # never within the test: only the freed memory can lift it
        worker_env={**WORKER_ENV, OOM_FAULT_ENV: "1"},
    ) as fleet:
        too_big = fleet.submit(images(2, "two images do not fit"))
        with pytest.raises(JobOutOfMemoryError):
            await finished(too_big)
        await replica_count(fleet, 0, ready_only=False)
        waiting = fleet.submit(images(1, "waits for room"))
        fleet.replan_now()
        assert fleet.replicas("demo", ready_only=False) == [], "the cap holds"

        inventory.set_tenant_usage("sim-0", 0)  # the other tenant leaves
        fleet.replan_now()

        output = await finished(waiting, timeout=STARTUP_S)
        assert len(output.images) == 1


async def test_a_halved_batch_size_comes_back_after_the_cool_down():
    async with fleet_on(
        one_gpu(),
        max_replicas=1,
        max_batch_size=4,
        oom_cooldown_s=1.0,
        worker_env={**WORKER_ENV, OOM_FAULT_ENV: "2"},  # up to two images fit
    ) as fleet:
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        three = [fleet.submit(spec(f"three {i}", seed=i), caller=f"c{i}") for i in range(3)]
        await fleet.cancel(blocker.id)
        for job in three:
            await finished(job)
        assert [start.batch_size for start in starts(three[0])] == [3, 1]

        await fleet.wait_until(lambda: fleet.batch_limit("demo") == 4, 60)
        blocker = fleet.submit(long_spec("second blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        two = [fleet.submit(spec(f"two {i}", seed=i), caller=f"c{i}") for i in range(2)]
        await fleet.cancel(blocker.id)
        for job in two:
            await finished(job)
        assert [start.batch_size for start in starts(two[0])] == [2]
