"""A model with ``min_replicas = 0`` (issue 13, defect 2), with real worker processes.

It is ready at once with no replica, its first job starts one (and its queued event says the
wait is a cold start), an idle model shrinks back to none, and a replica that cannot start fails
the jobs waiting for it instead of leaving them queued for ever.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from engine.config import demo_model_config
from scheduler.errors import NotServingError
from scheduler.fleet import FleetScheduler, FleetSettings
from scheduler.job import Queued
from tests.scheduler.test_fleet import (
    FAST,
    STARTUP_S,
    finished,
    fleet_on,
    one_gpu,
    replica_count,
    spec,
)


def queued(job_history: tuple[object, ...]) -> Queued:
    first = job_history[0]
    assert isinstance(first, Queued)
    return first


async def test_a_model_scales_from_zero_on_its_first_job_and_back_when_idle():
    async with fleet_on(one_gpu(), min_replicas=0, max_replicas=1, idle_scale_down_s=2.0) as fleet:
        assert fleet.replicas("demo", ready_only=False) == []  # ready, and nothing running
        assert fleet.can_run_jobs(), "health: SERVING, a job will start a replica"

        cold = fleet.submit(spec("the first job"))
        assert queued(cold.history).cold_start
        assert len((await finished(cold, timeout=STARTUP_S)).images) == 1
        warm = fleet.submit(spec("the next job"))
        assert not queued(warm.history).cold_start
        await finished(warm)

        await replica_count(fleet, 0, ready_only=False)  # idle: back to none
        again = fleet.submit(spec("after the idle time"))
        first_event = queued(again.history)
        assert first_event.cold_start
        assert first_event.estimated_wait_s > 0, "the last measured start is in the estimate"
        await finished(again, timeout=STARTUP_S)


async def test_a_cold_start_that_fails_fails_the_waiting_jobs():
    # A model whose weights folder does not exist: its replica can never load.
    config = dataclasses.replace(
        demo_model_config(), source="/nonexistent/weights", min_replicas=0, max_replicas=1
    )
    fleet = FleetScheduler([config], one_gpu(), FleetSettings(**FAST))  # type: ignore[arg-type]
    await fleet.start()
    try:
        await asyncio.wait_for(fleet.wait_ready(), STARTUP_S)  # ready: it scales from zero
        job = fleet.submit(spec("waits for a replica that never comes"))
        with pytest.raises(NotServingError, match="no replica of 'demo' could start"):
            await finished(job, timeout=STARTUP_S)
        assert not fleet.can_run_jobs(), "health: NOT_SERVING while no replica can start"
    finally:
        await fleet.drain(5.0)
    assert fleet.active_jobs() == []
