"""Why the scheduler refused or ended a job. The server maps each to one gRPC status."""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose."""


class UnknownModelError(SchedulerError):
    """No served model has this id."""

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(f"unknown model {model!r}; served models: {', '.join(known) or 'none'}")
        self.model = model
        self.known = known


class UnknownJobError(SchedulerError):
    """No job with this id is known (never submitted, or forgotten after its retention time)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"unknown job {job_id!r}")
        self.job_id = job_id


class QueueFullError(SchedulerError):
    """The model's queue is full; ``retry_after_s`` estimates when a place frees up."""

    def __init__(self, model: str, capacity: int, retry_after_s: float) -> None:
        super().__init__(
            f"the queue for model {model!r} is full ({capacity} jobs); "
            f"retry in about {retry_after_s:.1f}s"
        )
        self.model = model
        self.retry_after_s = retry_after_s


class CallerLimitError(SchedulerError):
    """One caller (``subject``) already holds as many queued jobs or open streams as it may, or
    one job (``subject`` "job") has as many watchers as it may.

    The message names the limit, never the caller (an identity is nobody else's business).
    """

    def __init__(
        self, what: str, limit: int, retry_after_s: float, subject: str = "caller"
    ) -> None:
        super().__init__(
            f"too many {what} for this {subject} (the limit is {limit}); "
            f"retry in about {retry_after_s:.1f}s"
        )
        self.subject = subject
        self.what = what
        self.limit = limit
        self.retry_after_s = retry_after_s


class NotServingError(SchedulerError):
    """The scheduler is warming up or draining and takes no new jobs."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class JobCancelledError(SchedulerError):
    """The job was cancelled (by its caller, or by a drain that ran out of grace)."""


class JobDeadlineError(SchedulerError):
    """The job's deadline passed before it could finish."""


class JobFailedError(SchedulerError):
    """The job could not be completed (the model raised, or replicas kept failing)."""


class ReplicaCrashedError(JobFailedError):
    """The replica's process kept dying while running the job; retrying later may work."""


class ReplicaHungError(ReplicaCrashedError):
    """The replica stopped making progress while running the job, and was recycled."""


class JobOutOfMemoryError(JobFailedError):
    """The device ran out of memory running the job."""


class JobServerLostError(SchedulerError):
    """The server running the job stopped (its lease in the shared job store expired) before the
    job ended; another server reports it. Submitting again may work (another server runs it)."""
