"""One replica per model, each with a bounded FIFO queue.

The first scheduler behind the seam in scheduler.interface. The packing scheduler (replicas
placed by measured memory, batching, priorities) replaces it without the server changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from engine import ipc
from engine.config import ModelConfig
from engine.job import GenerationSpec
from scheduler.errors import (
    JobCancelledError,
    JobDeadlineError,
    JobFailedError,
    JobOutOfMemoryError,
    NotServingError,
    QueueFullError,
    ReplicaCrashedError,
    SchedulerError,
    UnknownJobError,
    UnknownModelError,
)
from scheduler.interface import ModelStatus
from scheduler.job import Job, JobState, Queued, Started
from scheduler.replica import Replica, ReplicaStartError, WorkerDiedError
from scheduler.status import ModelQueueStatus, ReplicaStatus, SchedulerStatus
from scheduler.throughput import ThroughputEstimate

log = logging.getLogger("pointillist.scheduler")

# Waits between restarts of a replica that keeps dying; the last value repeats.
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class _Lane:
    """A model's replica, queue and measurements."""

    config: ModelConfig
    replica: Replica
    queue: deque[Job] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    first_start: asyncio.Future[None] | None = None
    running: Job | None = None
    throughput: ThroughputEstimate = field(default_factory=ThroughputEstimate)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class SingleReplicaScheduler:
    """Runs each model on one worker process; jobs for a model run one at a time, in order."""

    def __init__(
        self,
        models: list[ModelConfig],
        *,
        default_model: str | None = None,
        queue_capacity: int = 32,
        max_attempts: int = 2,
        startup_timeout_s: float = 600.0,
        job_retention_s: float = 600.0,
    ) -> None:
        if not models:
            raise ValueError("at least one model must be configured")
        self._lanes = {
            config.id: _Lane(config, Replica(f"{config.id}-0", config)) for config in models
        }
        self._default_model = default_model or models[0].id
        if self._default_model not in self._lanes:
            raise ValueError(f"default model {self._default_model!r} is not configured")
        self._queue_capacity = queue_capacity
        self._max_attempts = max_attempts
        self._startup_timeout_s = startup_timeout_s
        self._job_retention_s = job_retention_s
        self._jobs: dict[str, Job] = {}
        self._draining = False
        self._stopping = False
        self._last_sweep = time.monotonic()
        self._background: set[asyncio.Task[None]] = set()

    # The interface

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for lane in self._lanes.values():
            lane.first_start = loop.create_future()
            lane.tasks = [
                asyncio.create_task(self._supervise(lane), name=f"supervise-{lane.config.id}"),
                asyncio.create_task(self._dispatch(lane), name=f"dispatch-{lane.config.id}"),
            ]

    async def wait_ready(self) -> None:
        for lane in self._lanes.values():
            assert lane.first_start is not None, "start() first"
            await lane.first_start

    async def drain(self, grace_s: float) -> None:
        self._draining = True
        for lane in self._lanes.values():
            lane.wake.set()
        dispatchers = [lane.tasks[1] for lane in self._lanes.values() if lane.tasks]
        _, late = await asyncio.wait(dispatchers, timeout=grace_s)
        if late:
            log.warning("drain grace of %.0fs over: cancelling unfinished jobs", grace_s)
            shutdown = NotServingError("the server shut down before the job finished")
            for job in list(self._jobs.values()):
                await self._cancel(job, shutdown)
            _, late = await asyncio.wait(late, timeout=30.0)
        self._stopping = True
        for lane in self._lanes.values():
            for task in lane.tasks:
                task.cancel()
            await asyncio.gather(*lane.tasks, return_exceptions=True)
        await asyncio.gather(*(lane.replica.stop() for lane in self._lanes.values()))

    def models(self) -> list[ModelStatus]:
        return [
            ModelStatus(lane.config, lane.replica.loaded, lane.ready.is_set())
            for lane in self._lanes.values()
        ]

    def default_model(self) -> str:
        return self._default_model

    def submit(
        self,
        spec: GenerationSpec,
        *,
        deadline: float | None = None,
        priority: int = 0,
        caller: str = "",
    ) -> Job:
        if self._draining:
            raise NotServingError("the server is draining and accepts no new jobs")
        lane = self._lanes.get(spec.model)
        if lane is None:
            raise UnknownModelError(spec.model, list(self._lanes))
        if not lane.ready.is_set():
            raise NotServingError(f"model {spec.model!r} is warming up", retry_after_s=5.0)
        wait_s = self._estimated_wait_s(lane)
        if len(lane.queue) >= self._queue_capacity:
            head = self._estimated_job_s(lane, lane.queue[0].spec) if lane.queue else None
            raise QueueFullError(spec.model, self._queue_capacity, max(1.0, head or 1.0))
        if deadline is not None and time.monotonic() + wait_s > deadline:
            raise JobDeadlineError(
                f"the job would start in about {wait_s:.1f}s, after its deadline"
            )
        self._sweep_finished_jobs()
        job = Job(spec, deadline)
        job.publish(Queued(position=len(lane.queue), estimated_wait_s=wait_s))
        self._jobs[job.id] = job
        lane.queue.append(job)
        lane.wake.set()
        return job

    async def cancel(self, job_id: str) -> None:
        await self._cancel(self.get_job(job_id), JobCancelledError("the job was cancelled"))

    def get_job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or self._expired(job):
            self._jobs.pop(job_id, None)
            raise UnknownJobError(job_id)
        return job

    def _expired(self, job: Job) -> bool:
        finished = job.finished_at
        return finished is not None and time.monotonic() - finished >= self._job_retention_s

    def status(self) -> SchedulerStatus:
        replicas = []
        models = []
        for lane in self._lanes.values():
            replica = lane.replica
            running = 1 if lane.running is not None else 0
            replicas.append(
                ReplicaStatus(
                    id=replica.id,
                    model=lane.config.id,
                    device_id=replica.loaded.device.id if replica.loaded else "",
                    state=replica.state.value,
                    pid=replica.pid,
                    memory_bytes=replica.memory_bytes,
                    running_jobs=running,
                )
            )
            models.append(
                ModelQueueStatus(
                    model=lane.config.id,
                    queued_jobs=len(lane.queue),
                    running_jobs=running,
                    replicas=1,
                    footprint_bytes=replica.memory_bytes or None,
                    footprint_measured=replica.loaded is not None,
                )
            )
        return SchedulerStatus(
            devices=(), replicas=tuple(replicas), models=tuple(models), draining=self._draining
        )

    # Inspection, for status pages and tests

    def replica(self, model: str) -> Replica:
        return self._lanes[model].replica

    def active_jobs(self) -> list[Job]:
        """Jobs queued or running (a drained, idle scheduler has none)."""
        return [job for job in self._jobs.values() if not job.state.finished]

    # Supervision and dispatch

    async def _supervise(self, lane: _Lane) -> None:
        """Keep the lane's replica alive: start it, notice its death at once, restart it."""
        assert lane.first_start is not None
        failures = 0
        while not self._stopping:
            try:
                await lane.replica.start(self._startup_timeout_s)
            except ReplicaStartError as exc:
                if not lane.first_start.done():
                    lane.first_start.set_exception(exc)
                    return
                failures += 1
                log.error("%s; restarting", exc)
                await asyncio.sleep(RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1])
                continue
            failures = 0
            lane.ready.set()
            if not lane.first_start.done():
                lane.first_start.set_result(None)
            await lane.replica.exited.wait()
            lane.ready.clear()
            if self._stopping:
                return
            failures += 1
            log.error("replica %s exited unexpectedly; restarting", lane.replica.id)
            await lane.replica.kill()
            await asyncio.sleep(RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1])

    async def _dispatch(self, lane: _Lane) -> None:
        while (job := await self._next_job(lane)) is not None:
            await lane.ready.wait()
            if job.state.finished:
                continue  # cancelled while the replica was restarting
            await self._run(lane, job)

    async def _next_job(self, lane: _Lane) -> Job | None:
        while True:
            while lane.queue:
                job = lane.queue.popleft()
                if job.state.finished:
                    continue
                if job.deadline_passed():
                    job.fail(JobDeadlineError("the deadline passed while the job was queued"))
                    continue
                return job
            if self._draining:
                return None
            lane.wake.clear()
            await lane.wake.wait()

    async def _run(self, lane: _Lane, job: Job) -> None:
        replica = lane.replica
        assert replica.loaded is not None
        lane.running = job
        job.attempts += 1
        job.publish(Started(replica_id=replica.id, device=replica.loaded.device))
        run_started = time.monotonic()
        deadline_timer = self._start_deadline_timer(replica, job)
        try:
            outcome = await replica.run(job.id, job.spec, job.publish)
        except WorkerDiedError as exc:
            self._retry_or_fail(lane, job, exc)
            return
        finally:
            lane.running = None
            if deadline_timer is not None:
                deadline_timer.cancel()
        if isinstance(outcome, ipc.JobDone):
            now = time.monotonic()
            lane.throughput.record(job.spec, outcome.output.timings.denoising_s, now - run_started)
            timings = dataclasses.replace(
                outcome.output.timings,
                queue_wait_s=(job.started_at or now) - job.submitted_at,
                total_s=now - job.submitted_at,
            )
            job.publish(dataclasses.replace(outcome.output, timings=timings))
        elif isinstance(outcome, ipc.JobCancelled):
            job.completed_steps = outcome.completed_steps
            job.steps_after_cancel = outcome.steps_after_cancel
            job.fail(self._cancel_reason(job), JobState.CANCELLED)
        else:
            failure = JobOutOfMemoryError if outcome.out_of_memory else JobFailedError
            job.fail(failure(f"the model failed: {outcome.message}"))

    def _retry_or_fail(self, lane: _Lane, job: Job, exc: WorkerDiedError) -> None:
        if job.cancel_requested:
            job.fail(self._cancel_reason(job), JobState.CANCELLED)
        elif job.attempts < self._max_attempts:
            log.warning("%s; job %s goes back to the head of the queue", exc, job.id)
            lane.queue.appendleft(job)
            lane.wake.set()
        else:
            job.fail(ReplicaCrashedError(f"the replica crashed {job.attempts} times on this job"))

    def _start_deadline_timer(self, replica: Replica, job: Job) -> asyncio.Task[None] | None:
        if job.deadline is None:
            return None

        async def cancel_at_deadline(deadline: float) -> None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            await replica.cancel(job.id)

        return asyncio.create_task(cancel_at_deadline(job.deadline))

    async def _cancel(self, job: Job, reason: SchedulerError) -> None:
        if job.state.finished:
            return
        job.cancel_requested = True
        job.cancel_reason = reason
        if job.state is JobState.QUEUED:
            lane = self._lanes[job.spec.model]
            with contextlib.suppress(ValueError):
                lane.queue.remove(job)
            job.fail(reason, JobState.CANCELLED)
            return
        await self._lanes[job.spec.model].replica.cancel(job.id)

    def _cancel_reason(self, job: Job) -> SchedulerError:
        if job.cancel_reason is not None:
            return job.cancel_reason
        if job.deadline_passed():
            return JobDeadlineError("the deadline passed while the job was running")
        return JobCancelledError("the job was cancelled")

    # Estimates and housekeeping

    def _estimated_job_s(self, lane: _Lane, spec: GenerationSpec) -> float | None:
        return lane.throughput.job_seconds(spec)

    def _estimated_wait_s(self, lane: _Lane) -> float:
        """Time until a job submitted now would start: the running job's rest plus the queue."""
        total = 0.0
        running = lane.running
        if running is not None:
            expected = self._estimated_job_s(lane, running.spec) or 0.0
            elapsed = time.monotonic() - (running.started_at or time.monotonic())
            total += max(0.0, expected - elapsed)
        for queued in lane.queue:
            total += self._estimated_job_s(lane, queued.spec) or 0.0
        return total

    def _sweep_finished_jobs(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        for job_id, job in list(self._jobs.items()):
            if self._expired(job):
                del self._jobs[job_id]
