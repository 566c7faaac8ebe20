"""A job's record: its spec, state, and the history of its events, replayable to any watcher."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from engine.job import DeviceInfo, GenerationOutput, GenerationSpec, StepPreview, StepProgress
from engine.worker_tracing import SpanRecord
from scheduler.errors import JobCancelledError, JobDeadlineError, SchedulerError

log = logging.getLogger("pointillist.scheduler")


LOGGED_ID_CHARS = 12
"""How much of a job id the logs show: enough to find the job (48 bits), not the id itself,
which lets whoever holds it watch or cancel the job when API keys are off."""


def short_id(job_id: str) -> str:
    """The prefix of ``job_id`` that log lines carry."""
    return job_id[:LOGGED_ID_CHARS]


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Queued:
    """The job waits; ``position`` jobs are ahead of it for the same model."""

    position: int
    estimated_wait_s: float
    # No replica was running: the wait includes starting one (a model scaling from zero).
    cold_start: bool = False


@dataclass(frozen=True)
class Started:
    """A replica started the job."""

    replica_id: str
    device: DeviceInfo
    batch_size: int = 1


JobEvent = Queued | Started | StepProgress | StepPreview | GenerationOutput


class JobObserver(Protocol):
    """Told of everything that happens to a job, synchronously, as it happens (the server's
    traces, metrics and logs). Must be quick and must not raise."""

    def on_event(self, job: Job, event: JobEvent) -> None:
        """An event was published (it is already in the job's history)."""

    def on_worker_spans(self, job: Job, spans: tuple[SpanRecord, ...]) -> None:
        """A run of the job ended in its worker, which recorded these phases."""

    def on_finished(self, job: Job) -> None:
        """The job ended: ``job.state`` says how, ``job.error`` why if it failed."""


class Job:
    """One accepted generation. Events are kept so a late watcher sees the whole story."""

    def __init__(
        self,
        spec: GenerationSpec,
        deadline: float | None = None,
        priority: int = 0,
        caller: str = "",
    ) -> None:
        self.id = uuid.uuid4().hex
        self.spec = spec
        self.deadline = deadline  # time.monotonic() value, or None
        self.priority = priority
        self.caller = caller
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.state = JobState.QUEUED
        self.error: SchedulerError | None = None
        self.attempts = 0
        self.cancel_requested = False
        self.cancel_reason: SchedulerError | None = None
        # Filled when a running job was cancelled: how far it got, and how many steps ran after
        # the cancel reached the worker (the engine promises at most one).
        self.completed_steps: int | None = None
        self.steps_after_cancel: int | None = None
        self._history: list[JobEvent] = []
        # Replaced on every change; a watcher holds the one it saw, so no wake-up is ever lost.
        self._changed = asyncio.Event()
        self._observers: list[JobObserver] = []
        # The W3C carrier of the span the job's next run belongs to (set by an observer when
        # the job starts); sent to the worker, which traces the run only when it is non-empty.
        self.trace_context: dict[str, str] = {}
        self._watching = 0  # events() iterations under way: history is trimmed only at 0
        self._settled: list[Callable[[Job], None]] = []

    def observe(self, observer: JobObserver) -> None:
        """Tell ``observer`` of everything from now on (the history so far is in ``history``)."""
        self._observers.append(observer)

    def report_worker_spans(self, spans: tuple[SpanRecord, ...]) -> None:
        """The phases a worker recorded for one run of the job."""
        if spans:
            self._tell(lambda observer: observer.on_worker_spans(self, spans))

    def on_settled(self, call: Callable[[Job], None]) -> None:
        """Call ``call`` when the job finishes and whenever its last watcher leaves after."""
        self._settled.append(call)

    def trim(self) -> None:
        """Drop what a late watcher of a finished job no longer needs: its previews. The result
        stays, even once its caller got it: a later request may take it as an init image (a
        job image reference); the byte budget (scheduler/job_registry.py) bounds what that
        costs. Only with nobody iterating the events: a live watcher reads them by position."""
        if not self.state.finished or self._watching:
            return
        self._history = [event for event in self._history if not isinstance(event, StepPreview)]

    def _tell_settled(self) -> None:
        for call in self._settled:
            call(self)

    @property
    def history(self) -> tuple[JobEvent, ...]:
        return tuple(self._history)

    @property
    def result(self) -> GenerationOutput | None:
        last = self._history[-1] if self._history else None
        return last if isinstance(last, GenerationOutput) else None

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def cancel_error(self, deadline_exceeded: bool = False) -> SchedulerError:
        """Why a cancel ends the job: its deadline (passed, or the caller's RPC deadline), else
        a plain cancel."""
        if deadline_exceeded or self.deadline_passed():
            return JobDeadlineError("the deadline passed before the job finished")
        return JobCancelledError("the job was cancelled")

    def publish(self, event: JobEvent) -> None:
        """Record an event and wake every watcher."""
        if self.state.finished:
            return
        if isinstance(event, Started):
            self.state = JobState.RUNNING
            self.started_at = time.monotonic()
        elif isinstance(event, Queued):
            # Also a retried job (its replica crashed or ran out of memory) waiting again: it is
            # not running, and its next start is a new one.
            self.state = JobState.QUEUED
            self.started_at = None
        self._history.append(event)
        self._tell(lambda observer: observer.on_event(self, event))
        if isinstance(event, GenerationOutput):
            self._finish(JobState.SUCCEEDED)
        self._wake()

    def fail(self, error: SchedulerError, state: JobState = JobState.FAILED) -> None:
        """End the job without a result; watchers get ``error`` raised."""
        if self.state.finished:
            return
        self.error = error
        self._finish(state)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _finish(self, state: JobState) -> None:
        self.state = state
        self.finished_at = time.monotonic()
        self._tell(lambda observer: observer.on_finished(self))
        self._tell_settled()

    def _tell(self, call: Callable[[JobObserver], None]) -> None:
        # Telemetry must never break a job: an observer that raises is logged and skipped.
        for observer in self._observers:
            try:
                call(observer)
            except Exception:
                log.exception("a job observer failed on job %s", self.id)

    async def events(self) -> AsyncIterator[JobEvent]:
        """Every event from the first, then live ones; raises the job's error if it failed."""
        seen = 0
        self._watching += 1
        try:
            while True:
                changed = self._changed
                while seen < len(self._history):
                    seen += 1
                    yield self._history[seen - 1]
                if self.state.finished:
                    if self.error is not None:
                        raise self.error
                    return
                if seen == len(self._history):
                    await changed.wait()
        finally:
            self._watching -= 1
            if self._watching == 0 and self.state.finished:
                self._tell_settled()
