"""One job space for many servers, in Redis (``job_store = "redis://host:port/db"``).

Each server still runs its own jobs in its own scheduler; this module makes them visible to
every other server sharing the Redis:

- **Records and events.** A job this server accepted is written as one Redis Stream,
  ``pointillist:job:<id>``: a ``record`` entry (spec, caller, owner), then every event in order,
  then one ``end`` entry. Another server answers WatchJob / GetJob / CancelJob from it through a
  ``RemoteJob``, which a follower task feeds with the entries as they arrive (XREAD BLOCK).
- **Bounds.** The stream expires ``retention_s`` after the job ends (a live job's expiry is
  renewed with its owner's lease); the previews are deleted from it when the job ends, as the
  in-process registry drops them. What is left per job is its record, a few small events and
  the result; Redis's ``maxmemory`` bounds the total.
- **Leases.** Each server holds ``pointillist:server:<id>:lease`` (renewed every third of
  ``lease_s``). A follower whose job's owner has no lease ends the job in the store with
  UNAVAILABLE (JobServerLostError), once, for every server: nothing waits forever on a dead
  server.
- **Cancels.** A cancel for a job another server runs goes onto the owner's stream
  ``pointillist:server:<id>:cancels``, which the owner reads (XREAD BLOCK) and obeys at once, so
  the job stops within a step as a local cancel would.
- **Single flight.** A flight's run is named under ``pointillist:flight:<hash of its key>``, so an
  identical seeded request on another server follows that run instead of running again
  (scheduler.caching_scheduler).

A Redis that fails never fails a local job: writes are retried briefly, then dropped with a
warning (other servers then see less of the job); a follower that cannot reach Redis ends its
view of the job with UNAVAILABLE rather than hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.worker_tracing import SpanRecord
from scheduler.errors import JobServerLostError
from scheduler.job import Job, JobEvent, JobState, short_id
from scheduler.job_event_codec import (
    JobEnd,
    JobRecord,
    decode_record,
    encode_end,
    encode_event,
    encode_record,
)
from scheduler.redis_result_store import redacted_url
from scheduler.remote_job import FIRST_ENTRY, RemoteJob
from scheduler.result_codec import CorruptEntryError

log = logging.getLogger("pointillist.job_store")

JOB_PREFIX = "pointillist:job:"
SERVER_PREFIX = "pointillist:server:"
FLIGHT_PREFIX = "pointillist:flight:"
POLL_S = 1.0
"""How long a follower's XREAD blocks before it checks the owner's lease again."""
WRITE_ATTEMPTS = 3
RECORD_WAIT_S = 2.0
"""How long a submit waits for its job's record to reach Redis before answering anyway."""
MAX_CANCEL_ENTRIES = 1000

# The end entry is written once, whoever writes it first (the owner, or a server that found the
# owner's lease gone): later ends are dropped, and readers stop at the first.
_APPEND_END = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[1], '*', 'k', 'end', 'd', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE_FLIGHT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

CancelHandler = Callable[[str, bool], Awaitable[None]]
Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry as redis-py returns it (bytes, no decode_responses)."""


class JobStoreUnavailableError(Exception):
    """The shared job store could not be reached when the server started."""


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def lease_key(server_id: str) -> str:
    return f"{SERVER_PREFIX}{server_id}:lease"


def cancels_key(server_id: str) -> str:
    return f"{SERVER_PREFIX}{server_id}:cancels"


def flight_key(name: str) -> str:
    return FLIGHT_PREFIX + hashlib.sha256(name.encode()).hexdigest()


class SharedJobSpace:
    """This server's view of the job space in Redis (see the module docstring)."""

    def __init__(self, url: str, *, lease_s: float = 10.0, retention_s: float = 600.0) -> None:
        self.url = url
        self.server_id = uuid.uuid4().hex
        self.lease_s = lease_s
        self.retention_s = retention_s
        # Blocking reads hold a connection for POLL_S: the socket timeout must outlast them.
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=POLL_S + 4.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
        )
        self._end_script = self._redis.register_script(_APPEND_END)
        self._release_script = self._redis.register_script(_RELEASE_FLIGHT)
        self._outbox: asyncio.Queue[tuple[Job, str, bytes]] = asyncio.Queue()
        self._live: dict[str, Job] = {}  # this server's unfinished jobs (their expiry is renewed)
        self._previews: dict[str, list[str]] = {}  # a live job's preview entry ids
        self._following: dict[str, RemoteJob] = {}
        self._recording: dict[str, asyncio.Event] = {}  # jobs whose record is not yet written
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_failures = 0

    # Lifecycle

    async def start(self, on_cancel: CancelHandler) -> None:
        """Take the lease, then run the writer, the lease's heartbeat and the cancel reader.

        Raises JobStoreUnavailableError when Redis cannot be reached: a server configured for a
        shared job space does not start without it (its jobs would be invisible to the others).
        """
        try:
            await self._redis.set(lease_key(self.server_id), "1", px=self._lease_ms())
        except (RedisError, OSError) as exc:
            raise JobStoreUnavailableError(
                f"job store {redacted_url(self.url)}: {type(exc).__name__}: {exc}"
            ) from exc
        log.info(
            "job store %s: this server is %s", redacted_url(self.url), short_id(self.server_id)
        )
        self._spawn(self._write_forever(), "job-store-writer")
        self._spawn(self._heartbeat_forever(), "job-store-lease")
        self._spawn(self._read_cancels_forever(on_cancel), "job-store-cancels")

    async def close(self) -> None:
        """Write what is queued (briefly), stop every task, give up the lease."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(lease_key(self.server_id), cancels_key(self.server_id))
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    # This server's jobs

    def track(self, job: Job) -> None:
        """Write ``job``'s record and every event from now on (and what it has published)."""
        record = JobRecord(
            job.id, self.server_id, job.spec, job.caller, job.priority, job.submitted_at
        )
        self._recording[job.id] = asyncio.Event()
        self._outbox.put_nowait((job, "record", encode_record(record)))
        for event in job.history:
            self._queue_event(job, event)
        if job.state.finished:
            self._queue_end(job)
            return
        self._live[job.id] = job
        job.observe(_Mirror(self))

    async def recorded(self, job_id: str) -> None:
        """Return once the record of ``job_id`` is written (or could not be: then at once)."""
        event = self._recording.get(job_id)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), RECORD_WAIT_S)

    def _queue_event(self, job: Job, event: JobEvent) -> None:
        kind, data = encode_event(event)
        self._outbox.put_nowait((job, kind, data))

    def _queue_end(self, job: Job) -> None:
        self._live.pop(job.id, None)
        end = JobEnd(job.state, job.error, job.cancel_requested, job.finished_at or 0.0)
        self._outbox.put_nowait((job, "end", encode_end(end)))

    async def _write_forever(self) -> None:
        while True:
            job, kind, data = await self._outbox.get()
            try:
                for attempt in range(WRITE_ATTEMPTS):
                    try:
                        await self._write(job, kind, data)
                        self._write_failures = 0
                        break
                    except (RedisError, OSError) as exc:
                        if attempt + 1 == WRITE_ATTEMPTS:
                            self._write_failed(job, kind, exc)
                        else:
                            await asyncio.sleep(0.2 * (attempt + 1))  # a brief Redis hiccup
            finally:
                if kind == "record":  # written or given up: nobody waits for it any more
                    self._recording.pop(job.id, asyncio.Event()).set()
                self._outbox.task_done()

    async def _write(self, job: Job, kind: str, data: bytes) -> None:
        key = job_key(job.id)
        if kind == "end":
            previews = self._previews.pop(job.id, [])
            if previews:
                await self._redis.xdel(key, *previews)
            await self._end_script(keys=[key, key + ":ended"], args=[data, self._retention_ms()])
            return
        entry = await self._redis.xadd(key, {"k": kind, "d": data})
        if kind == "preview":
            self._previews.setdefault(job.id, []).append(_text(entry))
        if kind == "record":
            await self._redis.pexpire(key, self._retention_ms() + self._lease_ms())

    def _write_failed(self, job: Job, kind: str, exc: BaseException) -> None:
        self._write_failures += 1
        if self._write_failures == 1:
            log.warning(
                "job store %s: could not write job %s's %s (%s: %s); other servers see less of it",
                redacted_url(self.url),
                short_id(job.id),
                kind,
                type(exc).__name__,
                exc,
            )

    async def _heartbeat_forever(self) -> None:
        """Renew the lease and the live jobs' expiry, every third of the lease."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.set(lease_key(self.server_id), "1", px=self._lease_ms())
                    for job_id in self._live:
                        pipe.pexpire(job_key(job_id), self._retention_ms() + self._lease_ms())
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("job store: lease not renewed (%s: %s)", type(exc).__name__, exc)

    async def _read_cancels_forever(self, on_cancel: CancelHandler) -> None:
        key, last = cancels_key(self.server_id), FIRST_ENTRY
        while True:
            try:
                reply = await self._read(key, last)
            except (RedisError, OSError) as exc:
                log.warning("job store: cannot read cancels (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(POLL_S)
                continue
            for _, entries in reply:
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    job_id = _text(fields.get(b"job", b""))
                    try:
                        await on_cancel(job_id, fields.get(b"deadline") == b"1")
                    except Exception as exc:  # an unknown or finished job: nothing to stop
                        log.debug("cancel of job %s from another server: %s", short_id(job_id), exc)

    # Other servers' jobs

    async def find(self, job_id: str) -> RemoteJob | None:
        """The job as the store has it, followed live until it ends; None when unknown."""
        following = self._following.get(job_id)
        if following is not None:
            return following
        entries = await self._range(job_id)
        if not entries or _text(entries[0][1].get(b"k", b"")) != "record":
            return None
        try:
            record = decode_record(bytes(entries[0][1][b"d"]))
        except CorruptEntryError as exc:
            log.warning("job store: unreadable record of job %s: %s", short_id(job_id), exc)
            return None
        job = RemoteJob(record)
        self._replay(job, entries)
        if not job.state.finished:
            self._following[job_id] = job
            job.on_settled(self._unfollow)
            self._spawn(self._follow(job), f"follow-{short_id(job_id)}")
        return job

    async def cancel(self, job_id: str, deadline_exceeded: bool = False) -> bool:
        """Ask the server running ``job_id`` to cancel it; False when the store has no such job."""
        entries = await self._range(job_id, count=1)
        if not entries or _text(entries[0][1].get(b"k", b"")) != "record":
            return False
        owner = decode_record(bytes(entries[0][1][b"d"])).owner
        await self._redis.xadd(
            cancels_key(owner),
            {"job": job_id, "deadline": "1" if deadline_exceeded else "0"},
            maxlen=MAX_CANCEL_ENTRIES,
            approximate=True,
        )
        return True

    async def _follow(self, job: RemoteJob) -> None:
        failures = 0
        while not job.state.finished:
            try:
                reply = await self._read(job_key(job.id), job.last_entry)
                for _, entries in reply:
                    self._replay(job, entries)
                if not reply and not await self._redis.exists(lease_key(job.owner)):
                    await self._end_lost(job)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                if failures >= WRITE_ATTEMPTS:
                    job.fail(
                        JobServerLostError(
                            f"the shared job store cannot be reached ({type(exc).__name__}), "
                            "so this server cannot follow the job"
                        )
                    )
                    return
                await asyncio.sleep(POLL_S)

    async def _end_lost(self, job: RemoteJob) -> None:
        log.warning(
            "job %s: its server %s holds no lease any more; ending it as unavailable",
            short_id(job.id),
            short_id(job.owner),
        )
        error = JobServerLostError("the server running this job stopped before it finished")
        end = JobEnd(JobState.FAILED, error, job.cancel_requested, time.monotonic())
        key = job_key(job.id)
        await self._end_script(
            keys=[key, key + ":ended"], args=[encode_end(end), self._retention_ms()]
        )

    def _unfollow(self, job: Job) -> None:
        self._following.pop(job.id, None)

    async def _range(self, job_id: str, count: int | None = None) -> list[Entry]:
        return cast(list[Entry], await self._redis.xrange(job_key(job_id), count=count))

    async def _read(self, key: str, after: str) -> list[tuple[bytes, list[Entry]]]:
        """Entries of ``key`` after ``after``, waiting up to POLL_S for one ([] if none came)."""
        reply: Any = await self._redis.xread({key: after}, block=int(POLL_S * 1000), count=100)
        return cast(list[tuple[bytes, list[Entry]]], reply or [])

    @staticmethod
    def _replay(job: RemoteJob, entries: list[Entry]) -> None:
        for entry_id, fields in entries:
            job.replay(_text(entry_id), _text(fields.get(b"k", b"")), bytes(fields.get(b"d", b"")))

    # Single flight across servers

    async def flight_run(self, name: str) -> str | None:
        """The job id of the run another server flies for ``name``, if any."""
        value = await self._redis.get(flight_key(name))
        return _text(value) if value is not None else None

    async def claim_flight(self, name: str, job_id: str) -> None:
        await self._redis.set(flight_key(name), job_id, nx=True, px=self._retention_ms())

    async def release_flight(self, name: str, job_id: str) -> None:
        await self._release_script(keys=[flight_key(name)], args=[job_id])

    # Helpers

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    def _retention_ms(self) -> int:
        return max(1, int(self.retention_s * 1000))


class _Mirror:
    """The JobObserver that queues a tracked job's events for the store."""

    def __init__(self, space: SharedJobSpace) -> None:
        self._space = space

    def on_event(self, job: Job, event: JobEvent) -> None:
        self._space._queue_event(job, event)

    def on_worker_spans(self, job: Job, spans: tuple[SpanRecord, ...]) -> None:
        pass

    def on_finished(self, job: Job) -> None:
        self._space._queue_end(job)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
