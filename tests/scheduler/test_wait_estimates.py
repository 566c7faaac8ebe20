"""Queue-wait estimates count image size (issue 13, defect 8), with real worker processes.

A job queued behind a 512x512 job must expect a longer wait than behind a 64x64 one: the
estimate comes from measured time per pixel-step, so mixed traffic is admitted and refused by
the work it really is.
"""

from __future__ import annotations

import time

import pytest

from scheduler.errors import JobDeadlineError
from scheduler.job import Job, JobState, Queued
from tests.scheduler.test_fleet import finished, fleet_on, long_spec, one_gpu, spec


def estimated_wait(job: Job) -> float:
    first = job.history[0]
    assert isinstance(first, Queued)
    return first.estimated_wait_s


async def test_the_wait_behind_a_large_job_counts_its_pixels():
    async with fleet_on(one_gpu(), max_replicas=1, max_batch_size=1) as fleet:
        await finished(fleet.submit(spec("measure", steps=4)))  # one 64x64 job measured
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)

        # One synchronous block (no await): the blocker's remaining time is the same for all.
        # Each caller has a line of its own, so the fair queue serves them in this order.
        first = fleet.submit(spec("first", steps=4), caller="a")
        fleet.submit(spec("large", steps=4, size=512), caller="b")
        behind_large = fleet.submit(spec("behind the large one", steps=4), caller="c")
        behind_small = fleet.submit(spec("behind a small one", steps=4), caller="d")

        small = estimated_wait(behind_small) - estimated_wait(behind_large)
        large = estimated_wait(behind_large) - estimated_wait(first) - small
        assert small > 0
        assert large == pytest.approx(64 * small, rel=0.01)  # (512 / 64)^2 the pixels

        # Deadline admission uses the same figures: the large job's own time alone is over a
        # deadline that a small job's time fits in many times.
        late = spec("large, too late", steps=4, size=512)
        with pytest.raises(JobDeadlineError):
            fleet.submit(late, deadline=time.monotonic() + 8 * small)
