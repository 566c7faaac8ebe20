"""Faults with real worker processes: a worker killed mid-batch, a worker that hangs (the
watchdog recycles it), and the simulated GPU losing memory to another tenant mid-run.

After each: every accepted job completed or ended with a clear status, no worker or scheduler
task is left (``fleet_on`` checks the jobs and the device; ``no_task_left`` the tasks), and the
device's memory used by our workers is back to its baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest

from engine.faults import HANG_FAULT_ENV
from engine.job import StepProgress
from scheduler.errors import ReplicaHungError
from scheduler.job import Job, JobState, Queued
from scheduler.simulated_inventory import SimulatedInventory
from tests.holds import new_hold
from tests.scheduler.test_fleet import (
    GIB,
    RESERVE,
    WORKER_ENV,
    finished,
    fleet_on,
    footprint,
    long_spec,
    one_gpu,
    replica_count,
    spec,
    starts,
)

MEMORY_MARGIN = 0.25
"""A restarted worker's resident memory may differ from the first one's by this fraction."""


@contextlib.asynccontextmanager
async def no_task_left() -> AsyncIterator[None]:
    """Every task the block started (replica lives, watchdogs, timers, planner) is over at its
    end: the fleet's drain must leave none behind."""
    before = asyncio.all_tasks()
    yield
    left = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert not left, f"tasks left behind: {sorted(task.get_name() for task in left)}"


def our_memory(inventory: SimulatedInventory) -> int:
    return sum(process.used_bytes for process in inventory.snapshot()[0].processes)


def progressed(job: Job) -> bool:
    return any(isinstance(event, StepProgress) for event in job.history)


async def test_a_worker_killed_mid_batch_reruns_every_member_and_memory_returns():
    inventory = one_gpu()
    async with no_task_left(), fleet_on(inventory, max_replicas=1, max_batch_size=4) as fleet:
        baseline = our_memory(inventory)
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        # Each member is held after its first step: the batch is mid-run when its worker dies,
        # however fast the machine is.
        holds = [new_hold(f"member-{i}") for i in range(3)]
        members = [
            fleet.submit(spec(hold.prompt, seed=i, steps=4), caller=f"c{i}")
            for i, hold in enumerate(holds)
        ]
        await fleet.cancel(blocker.id)
        await fleet.wait_until(lambda: any(progressed(job) for job in members), 120)
        assert all(job.state is JobState.RUNNING for job in members)
        (replica,) = fleet.replicas("demo")
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGKILL)
        # Released only once the rerun has started, so the killed worker cannot finish them.
        await fleet.wait_until(lambda: all(len(starts(job)) == 2 for job in members), 240)
        for hold in holds:
            hold.release()

        outputs = [await finished(job, timeout=240) for job in members]

        assert all(len(output.images) == 1 for output in outputs)
        for job in members:
            assert job.attempts == 2
            assert [start.batch_size for start in starts(job)] == [3, 3]
        await replica_count(fleet, 1)
        assert abs(our_memory(inventory) - baseline) <= MEMORY_MARGIN * baseline


async def test_a_hung_worker_is_recycled_by_the_watchdog_and_the_job_ends_clearly():
    inventory = one_gpu()
    async with (
        no_task_left(),
        fleet_on(
            inventory,
            max_replicas=1,
            max_batch_size=1,
            max_attempts=2,
            watchdog_floor_s=3.0,
            worker_env={**WORKER_ENV, HANG_FAULT_ENV: "hang here"},
        ) as fleet,
    ):
        baseline = our_memory(inventory)
        await finished(fleet.submit(spec("measure the steps", steps=4)))
        (first,) = fleet.replicas("demo")
        pid_before = first.pid
        hanging = fleet.submit(spec("hang here", steps=4))
        after = fleet.submit(spec("runs after the hang", steps=2), caller="someone else")

        with pytest.raises(ReplicaHungError) as hung:
            await finished(hanging, timeout=240)
        output = await finished(after, timeout=240)

        # Requeued once after the first recycle, then ended with a status that says why.
        assert hanging.state is JobState.FAILED and hanging.attempts == 2
        assert len(starts(hanging)) == 2
        assert "made no progress" in str(hung.value) and "recycled" in str(hung.value)
        assert len(output.images) == 1
        (replica,) = fleet.replicas("demo")
        assert replica.pid != pid_before
        assert abs(our_memory(inventory) - baseline) <= MEMORY_MARGIN * baseline


async def test_the_gpu_losing_memory_mid_run_drains_a_replica_after_its_job_and_loses_nothing():
    inventory = one_gpu(64)
    async with (
        no_task_left(),
        fleet_on(inventory, min_replicas=2, max_replicas=2, max_batch_size=1) as fleet,
    ):
        await replica_count(fleet, 2)
        size = footprint(fleet, inventory)
        holds = [new_hold(f"mid-run-{i}") for i in range(2)]
        jobs = [fleet.submit(spec(hold.prompt, seed=i, steps=4)) for i, hold in enumerate(holds)]
        await fleet.wait_until(lambda: all(progressed(job) for job in jobs), 120)

        # Another tenant takes the device's memory while both replicas run (hold) a job.
        inventory.set_tenant_usage("sim-0", 64 * GIB - RESERVE - int(1.5 * size))
        fleet.replan_now()
        for hold in holds:
            hold.release()
        outputs = [await finished(job, timeout=240) for job in jobs]
        await fleet.wait_until(lambda: len(inventory.snapshot()[0].processes) == 1, 60)

        assert all(len(output.images) == 1 for output in outputs)
        assert all(job.attempts == 1 for job in jobs), "the drained replica finished its job"
        assert inventory.snapshot()[0].free_bytes >= 0
        # The survivor still serves.
        assert len((await finished(fleet.submit(spec("after the squeeze")))).images) == 1


async def test_a_job_whose_worker_died_is_queued_again_with_an_event_until_it_reruns():
    async with no_task_left(), fleet_on(one_gpu(), max_replicas=1) as fleet:
        hold = new_hold("requeued")
        job = fleet.submit(spec(hold.prompt, steps=4))
        await fleet.wait_until(lambda: progressed(job), 60)  # held after step 1
        (replica,) = fleet.replicas("demo")
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGKILL)

        # The only replica restarts after a back-off: meanwhile the job waits, and says so.
        await fleet.wait_until(lambda: job.state is JobState.QUEUED, 60)
        assert job.started_at is None
        assert isinstance(job.history[-1], Queued)
        await fleet.wait_until(lambda: len(starts(job)) == 2, 240)
        hold.release()
        output = await finished(job, timeout=240)

        kinds = [type(event).__name__ for event in job.history]
        assert kinds[:3] == ["Queued", "Started", "StepProgress"]
        assert kinds.count("Queued") == 2 and kinds.count("Started") == 2
        second_queued = kinds.index("Queued", 1)
        assert kinds[second_queued + 1] == "Started"
        assert job.state is JobState.SUCCEEDED and len(output.images) == 1
