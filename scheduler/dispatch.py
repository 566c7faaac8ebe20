"""Dispatch: batches from a model's queue to a replica, and what each outcome means.

A free replica takes the next job plus compatible waiting ones (``engine.job.batch_key``) up to
the batch limit. Each member's result or cancel is published the moment the worker decides it.
A worker that dies or hangs has its jobs put back at the head of the queue (up to
``max_attempts`` runs each); an out-of-memory batch halves the batch limit and a single job that
runs out of memory lowers the device's replica cap, both for a while (``scheduler.oom_limits``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from engine import ipc
from engine.job import StepPreview, StepProgress, batch_key
from scheduler.errors import (
    JobCancelledError,
    JobDeadlineError,
    JobFailedError,
    JobOutOfMemoryError,
    ReplicaCrashedError,
    ReplicaHungError,
    SchedulerError,
)
from scheduler.fleet_core import FleetCore
from scheduler.fleet_state import ModelState, Slot
from scheduler.job import Job, JobState, Queued, Started, short_id
from scheduler.replica import BatchRun, JobOutcome, Replica, WorkerDiedError

log = logging.getLogger("pointillist.scheduler")


class Dispatch(FleetCore):
    """The dispatch part of the fleet (see the module docstring)."""

    async def _serve(self, model: ModelState, slot: Slot) -> None:
        """Take batches from the model's queue until the replica drains, stops or dies."""
        while not slot.draining and not self._stopping and not slot.replica.exited.is_set():
            jobs = await self._next_batch(model, slot)
            if jobs:
                await self._run_batch(model, slot, jobs)

    async def _next_batch(self, model: ModelState, slot: Slot) -> list[Job]:
        waits = [
            asyncio.create_task(model.queue.wait_for_jobs()),
            asyncio.create_task(slot.stop.wait()),
            asyncio.create_task(slot.replica.exited.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if slot.draining or slot.replica.exited.is_set():
            return []
        if self.settings.batch_window_s > 0 and len(model.queue) < model.oom.batch_limit:
            # Give compatible requests a moment to arrive and share this pipeline call.
            await asyncio.sleep(self.settings.batch_window_s)
        # A batch never holds more images than the warm-up that measured the footprint.
        jobs = model.queue.take(
            model.oom.batch_limit,
            lambda job: batch_key(job.spec),
            max_images=model.config.limits.max_images,
        )
        runnable = []
        for job in jobs:
            if job.state.finished:
                continue
            if job.deadline_passed():
                job.fail(JobDeadlineError("the deadline passed while the job was queued"))
                continue
            runnable.append(job)
        return runnable

    async def _run_batch(self, model: ModelState, slot: Slot, jobs: list[Job]) -> None:
        replica = slot.replica
        assert replica.loaded is not None
        by_id = {job.id: job for job in jobs}
        slot.running = jobs
        model.last_activity = time.monotonic()
        for job in jobs:
            job.attempts += 1
            job.publish(
                Started(replica_id=replica.id, device=replica.loaded.device, batch_size=len(jobs))
            )
        self._notify()
        timers = [self._deadline_timer(replica, job) for job in jobs if job.deadline is not None]
        started = time.monotonic()
        work = sum(job.spec.width * job.spec.height * job.spec.num_images for job in jobs)
        last_event = started

        def on_step(job_id: str, event: StepProgress | StepPreview) -> None:
            nonlocal last_event
            now = time.monotonic()
            model.step_clock.observe(work, now - last_event)
            last_event = now
            by_id[job_id].publish(event)

        hung: list[str] = []
        watchdog = asyncio.create_task(
            self._watch_for_hang(model, replica, work, lambda: last_event, hung),
            name=f"watchdog-{replica.id}",
        )

        def on_outcome(outcome: JobOutcome) -> None:
            # Published the moment the worker decides it: a member cancelled mid-batch is
            # CANCELLED at once, a member done before its batch-mates gets its result at once.
            job = by_id[outcome.job_id]
            if isinstance(outcome, ipc.JobDone):
                job.report_worker_spans(outcome.spans)
                self._publish_result(job, outcome)
            elif isinstance(outcome, ipc.JobCancelled):
                job.completed_steps = outcome.completed_steps
                job.steps_after_cancel = outcome.steps_after_cancel
                job.fail(self._cancel_reason(job), state=JobState.CANCELLED)
            self._notify()

        try:
            run = await replica.run_batch(
                [(job.id, job.spec, job.trace_context) for job in jobs], on_step, on_outcome
            )
        except WorkerDiedError as exc:
            if hung:
                await watchdog  # it is killing the worker: let it finish
            error = ReplicaHungError(hung[0]) if hung else ReplicaCrashedError(str(exc))
            for job in jobs:
                self._retry_or_fail(model, job, error)
            return
        except Exception:
            # Anything else on this path would end the slot's task and strand the jobs RUNNING
            # in no queue: restart the replica and put them back (or fail them, clearly).
            log.exception("running a batch on %s failed; restarting it", replica.id)
            await replica.kill()
            for job in jobs:
                crashed = ReplicaCrashedError(f"replica {replica.id} failed running the batch")
                self._retry_or_fail(model, job, crashed)
            return
        finally:
            if not hung:
                watchdog.cancel()
            slot.running = []
            for timer in timers:
                timer.cancel()
            model.last_activity = time.monotonic()
            self._notify()
        self._after_batch(model, slot, jobs, run, time.monotonic() - started)

    def _after_batch(
        self, model: ModelState, slot: Slot, jobs: list[Job], run: BatchRun, run_s: float
    ) -> None:
        """What a finished batch leaves: late spans, throughput, failures and OOM policy."""
        outcomes = run.outcomes
        images = sum(member.spec.num_images for member in jobs)
        for job in jobs:
            outcome = outcomes[job.id]
            if isinstance(outcome, ipc.JobCancelled):
                job.report_worker_spans(run.spans.get(job.id, ()))
            elif isinstance(outcome, ipc.JobFailed):
                job.report_worker_spans(outcome.spans)
            else:
                # Members share the replica's time (their part of its images); counting the
                # whole time for each would grow the estimate (queue waits, RetryInfo,
                # deadline admission) with the batch size.
                share = job.spec.num_images / images
                denoising_s = outcome.output.timings.denoising_s * share
                model.throughput.record(job.spec, denoising_s, run_s * share, slot.device.name)
        out_of_memory = [job for job in jobs if _ran_out_of_memory(outcomes[job.id])]
        if out_of_memory:
            self._handle_out_of_memory(model, slot, out_of_memory)
        for job in jobs:
            outcome = outcomes[job.id]
            if isinstance(outcome, ipc.JobFailed) and not outcome.out_of_memory:
                # The worker's text may hold paths, shapes or data: it goes to the log with the
                # job, and the caller gets a stable message (and ErrorInfo GENERATION_FAILED).
                log.error("job %s failed in the model: %s", short_id(job.id), outcome.message)
                job.fail(JobFailedError("the model failed running the job; the server log has it"))
        self._notify()

    async def _watch_for_hang(
        self,
        model: ModelState,
        replica: Replica,
        work: int,
        last_event: Callable[[], float],
        hung: list[str],
    ) -> None:
        """Kill the replica if it goes silent for longer than its model's StepClock allows;
        ``hung`` gets the reason, and the batch's WorkerDiedError becomes a ReplicaHungError."""
        while True:
            limit = model.step_clock.limit_s(work)
            silent = time.monotonic() - last_event()
            if silent < limit:
                await asyncio.sleep(limit - silent)
                continue
            reason = (
                f"replica {replica.id} made no progress for {silent:.1f}s (the limit from its "
                f"measured steps is {limit:.1f}s) and was recycled"
            )
            log.error("%s", reason)
            hung.append(reason)
            await replica.kill()
            return

    def _publish_result(self, job: Job, outcome: ipc.JobDone) -> None:
        now = time.monotonic()
        timings = dataclasses.replace(
            outcome.output.timings,
            queue_wait_s=(job.started_at or now) - job.submitted_at,
            total_s=now - job.submitted_at,
        )
        job.publish(dataclasses.replace(outcome.output, timings=timings))

    def _handle_out_of_memory(self, model: ModelState, slot: Slot, jobs: list[Job]) -> None:
        """Split a batch that ran out of memory; a single job lowers the device's count."""
        if len(jobs) > 1:
            limit = model.oom.cut_batch(len(jobs))
            log.warning(
                "a batch of %d ran out of memory on %s: batches of %s limited to %d for %.0fs",
                len(jobs),
                slot.replica.id,
                model.config.id,
                limit,
                self.settings.oom_cooldown_s,
            )
        else:
            here = [s for s in model.active_slots() if s.device.id == slot.device.id]
            device = self._devices.get(slot.device.id, slot.device)
            cap = model.oom.lower_cap(device, len(here), self._replica_memory(slot))
            log.warning(
                "a job ran out of memory on %s: at most %d replicas of %s on %s for %.0fs, "
                "or until its free memory grows",
                slot.replica.id,
                cap,
                model.config.id,
                slot.device.id,
                self.settings.oom_cooldown_s,
            )
            if len(here) > cap:
                self._drain(slot)
            self._wake_planner.set()
        for job in reversed(jobs):
            self._retry_or_fail(
                model, job, JobOutOfMemoryError("the device ran out of memory running the job")
            )

    def _retry_or_fail(self, model: ModelState, job: Job, error: SchedulerError) -> None:
        if job.state.finished:
            return  # its outcome came before the batch failed: nothing to run again
        if job.cancel_requested:
            job.fail(self._cancel_reason(job), state=JobState.CANCELLED)
        elif job.attempts < self.settings.max_attempts and not self._stopping:
            log.warning("%s; job %s goes back to the head of the queue", error, short_id(job.id))
            model.queue.push_front(job)
            job.publish(
                Queued(
                    position=model.queue.jobs_ahead(job),
                    estimated_wait_s=self._estimated_wait_s(model, job),
                )
            )
        else:
            job.fail(error)

    def _deadline_timer(self, replica: Replica, job: Job) -> asyncio.Task[None]:
        async def cancel_at_deadline(deadline: float) -> None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            await replica.cancel(job.id)

        assert job.deadline is not None
        return asyncio.create_task(cancel_at_deadline(job.deadline))

    async def _cancel(self, job: Job, reason: SchedulerError) -> None:
        if job.state.finished:
            return
        job.cancel_requested = True
        job.cancel_reason = reason
        model = self._models[job.spec.model]
        if model.queue.remove(job):
            job.fail(reason, state=JobState.CANCELLED)
            self._notify()
            return
        for slot in model.slots.values():
            if job in slot.running:
                await slot.replica.cancel(job.id)
                return

    def _cancel_reason(self, job: Job) -> SchedulerError:
        if job.cancel_reason is not None:
            return job.cancel_reason
        if job.deadline_passed():
            return JobDeadlineError("the deadline passed while the job was running")
        return JobCancelledError("the job was cancelled")


def _ran_out_of_memory(outcome: ipc.JobDone | ipc.JobCancelled | ipc.JobFailed) -> bool:
    return isinstance(outcome, ipc.JobFailed) and outcome.out_of_memory
