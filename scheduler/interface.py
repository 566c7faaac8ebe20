"""The seam between the server and the scheduler: submit a job, watch its events, cancel it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from engine.config import ModelConfig
from engine.job import GenerationSpec, LoadedModel
from scheduler.job import Job
from scheduler.status import SchedulerStatus


@dataclass(frozen=True)
class ModelStatus:
    """A served model as the server reports it: its configuration and what its replicas loaded."""

    config: ModelConfig
    loaded: LoadedModel | None
    ready: bool


class Scheduler(Protocol):
    """What the server needs from a scheduler. Every implementation keeps this exact shape."""

    async def start(self) -> None:
        """Start replicas; returns at once, readiness is reported by ``wait_ready``."""

    async def wait_ready(self) -> None:
        """Return once every model has at least one warm replica."""

    async def drain(self, grace_s: float) -> None:
        """Refuse new jobs, let accepted ones finish within ``grace_s``, cancel the rest."""

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait for the scheduler's state to satisfy ``condition``; raise TimeoutError.

        ``condition`` is checked at once and again after every change of state (a replica
        ready, lost or stopped, a job queued, started or ended).
        """

    def can_run_jobs(self) -> bool:
        """Whether a job can run now: some model has a ready replica."""

    def models(self) -> list[ModelStatus]:
        """Every served model, in configuration order."""

    def default_model(self) -> str:
        """The model used when a request names none."""

    def submit(
        self,
        spec: GenerationSpec,
        *,
        deadline: float | None = None,
        priority: int = 0,
        caller: str = "",
    ) -> Job:
        """Accept a validated job and return its record at once.

        Raises UnknownModelError, QueueFullError, NotServingError or JobDeadlineError (when the
        estimated start is already past the deadline). ``deadline`` is a ``time.monotonic()``
        value; a higher ``priority`` runs first; ``caller`` identifies who asked (an API key's
        identity, else the peer address) so that one caller cannot starve the others.
        """

    async def cancel(self, job_id: str, *, deadline_exceeded: bool = False) -> None:
        """Cancel a job: a queued one leaves its queue, a running one stops at the next step.

        ``deadline_exceeded``: the caller's deadline ended it (the job ends with JobDeadlineError,
        not JobCancelledError); the RPC's own deadline can fire a moment before the job's.
        """

    def get_job(self, job_id: str) -> Job:
        """The job's record; raises UnknownJobError."""

    def status(self) -> SchedulerStatus:
        """Devices, replicas, queues and measured footprints, now."""
