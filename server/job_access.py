"""Who may see a job: with API keys on, the key that submitted it, and every admin key.

Another user key asking for the job (WatchJob, GetJob, CancelJob) gets NOT_FOUND, exactly as for
an id that never existed: PERMISSION_DENIED would confirm that the id is real. Without keys
there is no identity to check (callers are addresses), and any caller who knows an id, which is
unguessable (122 random bits), may use it.
"""

from __future__ import annotations

from scheduler.caching_scheduler import CachingScheduler
from scheduler.errors import UnknownJobError
from scheduler.interface import Scheduler
from scheduler.job import Job
from server.auth import Role, current_caller


def visible_job(scheduler: Scheduler, job_id: str) -> Job:
    """The job ``job_id`` if this RPC's caller may see it; else UnknownJobError (NOT_FOUND)."""
    return _checked(scheduler.get_job(job_id))


async def find_visible_job(scheduler: CachingScheduler, job_id: str) -> Job:
    """Like ``visible_job``, for a job of any server sharing the job space."""
    return _checked(await scheduler.find_job(job_id))


def _checked(job: Job) -> Job:
    caller = current_caller()
    if caller is None or caller.role is Role.ADMIN or job.caller == caller.name:
        return job
    raise UnknownJobError(job.id)
