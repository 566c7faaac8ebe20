"""A cancelled batch member is CANCELLED at once (issue 13, defect 4), with real workers.

Before, a member's cancel was published only when its whole batch ended, so it stayed RUNNING
for as long as its batch-mates ran, and CancelJob could answer RUNNING after its wait.
"""

from __future__ import annotations

from engine.job import StepProgress
from scheduler.job import Job, JobState
from tests.holds import new_hold
from tests.scheduler.test_fleet import finished, fleet_on, long_spec, one_gpu, spec, starts


def progressed(job: Job) -> bool:
    return any(isinstance(event, StepProgress) for event in job.history)


async def test_a_cancelled_member_ends_at_once_while_its_batch_mate_runs_on():
    async with fleet_on(one_gpu(), max_replicas=1, max_batch_size=2) as fleet:
        blocker = fleet.submit(long_spec("blocker"))
        await fleet.wait_until(lambda: blocker.state is JobState.RUNNING, 60)
        # Both members are held after step 1, in batch order: the first holds the batch until
        # its cancel; then the second reports step 1 and holds, still running.
        first_hold, second_hold = new_hold("first"), new_hold("second")
        first = fleet.submit(spec(first_hold.prompt, seed=1, steps=4), caller="a")
        second = fleet.submit(spec(second_hold.prompt, seed=2, steps=4), caller="b")
        await fleet.cancel(blocker.id)
        await fleet.wait_until(lambda: progressed(first), 120)
        assert [start.batch_size for start in starts(first)] == [2]
        assert not progressed(second), "the first member holds the batch"

        await fleet.cancel(first.id)
        await fleet.wait_until(lambda: first.state is JobState.CANCELLED, 60)

        assert second.state is JobState.RUNNING  # held: its batch is still going
        assert first.completed_steps == 1
        second_hold.release()
        output = await finished(second)
        assert len(output.images) == 1 and second.state is JobState.SUCCEEDED
