"""The jobs a scheduler knows: live ones, and finished ones kept for late watchers, bounded by
time (``job_retention_s``, on a timer) and by memory (``job_history_max_mib``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from scheduler.job import Job

RECORD_OVERHEAD_BYTES = 4096
"""What a finished job's record costs besides its images: the Job object, its spec, its events
and the dict slots. An estimate, not yet checked with tracemalloc (see the issue 14 report)."""
EVENT_OVERHEAD_BYTES = 256
"""Each kept event's dataclass and list slot, images aside."""
IMAGE_OVERHEAD_BYTES = 128
"""Each image's dataclass and its bytes object's header, its data aside."""


def retained_bytes(job: Job) -> int:
    """What keeping ``job`` costs: its records plus every image byte its history holds."""
    size = RECORD_OVERHEAD_BYTES
    for event in job.history:
        size += EVENT_OVERHEAD_BYTES
        for image in getattr(event, "images", ()):
            size += IMAGE_OVERHEAD_BYTES + len(image.data) + len(image.url)
    return size


class JobRegistry:
    """Jobs by id. A finished job is trimmed (``Job.trim``) once nobody watches it, counted by
    its retained size, and forgotten after ``retention_s`` or, oldest first, when the finished
    jobs together exceed ``max_bytes``."""

    def __init__(
        self,
        retention_s: float,
        max_bytes: int,
        on_forget: Callable[[], None] | None = None,
    ) -> None:
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._on_forget = on_forget or (lambda: None)
        self._jobs: dict[str, Job] = {}
        # Finished jobs in the order they finished, with their counted size.
        self._finished: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def bytes(self) -> int:
        """The counted size of the finished jobs kept."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        """Whether the job is still held (expired but not yet swept counts: see ``get``)."""
        return job_id in self._jobs

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        job.on_settled(self._settled)
        if job.state.finished:  # a cache hit is born finished
            self._settled(job)
        self._ensure_sweeper()

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown, expired or evicted."""
        job = self._jobs.get(job_id)
        if job is not None and self._expired(job, time.monotonic()):
            self._forget(job_id)
            return None
        return job

    def pop(self, job_id: str) -> None:
        self._forget(job_id)

    def active(self) -> list[Job]:
        return [job for job in self._jobs.values() if not job.state.finished]

    async def close(self) -> None:
        """Stop the expiry timer (and wait until it has stopped: a drain leaves no task)."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    def _settled(self, job: Job) -> None:
        # Called when the job finishes and again whenever its last watcher leaves.
        if job.id not in self._jobs:
            return
        job.trim()
        size = retained_bytes(job)
        # Updated in place: the order stays the order the jobs finished in (expiry reads it).
        self._bytes += size - self._finished.get(job.id, 0)
        self._finished[job.id] = size
        while self._bytes > self.max_bytes and self._finished:
            self._forget(next(iter(self._finished)))
        self._wake.set()

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._bytes -= self._finished.pop(job_id, 0)
        self._on_forget()

    def _expired(self, job: Job, now: float) -> bool:
        finished = job.finished_at
        return finished is not None and now - finished >= self.retention_s

    def _ensure_sweeper(self) -> None:
        if self._sweeper is not None and not self._sweeper.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): lookups still check expiry themselves
        self._sweeper = loop.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        """Forget jobs as their retention ends, with no submit needed to notice."""
        while True:
            now = time.monotonic()
            while self._finished:
                oldest = self._jobs.get(next(iter(self._finished)))
                if oldest is None or not self._expired(oldest, now):
                    break
                self._forget(oldest.id)
            timeout: float | None = None
            if self._finished:
                oldest = self._jobs[next(iter(self._finished))]
                timeout = max(0.0, (oldest.finished_at or now) + self.retention_s - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
