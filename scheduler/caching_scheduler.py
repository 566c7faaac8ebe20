"""The result cache and single flight, in front of a scheduler.

A request with an explicit seed is deterministic, so its result can be kept and served again:
- **Hit**: the job is born finished. Its only event is the result, marked ``cached``, with the
  images of the earlier run and zero phase timings (``total_s`` is the lookup). No queued,
  started, progress or preview events, and no replica is touched.
- **Miss**: the first caller's job is submitted to the scheduler behind as usual and starts a
  *flight*. An identical request arriving while the flight is on gets a job of its own (its own
  id, cancellable on its own) that replays the flight's events, so concurrent identical
  requests run once. When the flight succeeds its result is stored, and the flight is left only
  after that, so a request arriving meanwhile attaches instead of running again.
- The key (``scheduler.result_key``) leaves preview settings out, since they never change the
  images; a flight's key keeps them in, so every caller of a flight asked for the same previews.
  A flight runs with its first caller's deadline and priority.
- The first caller owns its job: cancelling it cancels the run. If others wait on the flight,
  the flight submits the request again for them (their streams see a second queued and started,
  and progress from step 1, as after a replica crash). A later caller that cancels just leaves.
  A request arriving after the run was cancelled with nobody waiting starts a flight of its own.
  A flight's states and transitions are in ``scheduler.single_flight``.
- The store may fail or hang (Redis down): a failed or slow lookup is a miss and a failed store
  is skipped, so no request fails because of the cache.

Requests without a seed (``submit``) go straight to the scheduler behind.

With a shared job space (``scheduler.shared_jobs``, ``job_store = "redis://..."``) every job
returned here is written there, so other servers can watch, get and cancel it; a job unknown
here is looked up there (``find_job``) and a cancel for it goes to the server running it. A
flight's run is named there too: an identical seeded request on another server follows this
server's run (a *remote flight*) instead of running again. Two servers that miss at the same
moment both run (the name is taken first come, first served); if the remote run ends without a
result (cancelled by its owner, its server gone), the members waiting here get a run of their
own, as after a local handover.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from engine.job import GenerationOutput, GenerationSpec, LoadedModel, PreviewSettings, Timings
from scheduler.errors import NotServingError, SchedulerError, UnknownJobError
from scheduler.interface import ModelStatus, Scheduler
from scheduler.job import Job, JobEvent, JobState, short_id
from scheduler.job_registry import JobRegistry
from scheduler.result_codec import decode_output, encode_output
from scheduler.result_key import produced_by, result_key
from scheduler.result_store import ResultStore
from scheduler.shared_jobs import SharedJobSpace
from scheduler.single_flight import Flight
from scheduler.status import SchedulerStatus

log = logging.getLogger("pointillist.result_cache")

LOOKUP_TIMEOUT_S = 1.0
STORE_TIMEOUT_S = 5.0


class CachingScheduler:
    """A Scheduler that serves deterministic requests from ``store`` (None: no cache, but
    identical concurrent requests still run once)."""

    def __init__(
        self,
        inner: Scheduler,
        store: ResultStore | None,
        job_retention_s: float = 600.0,
        job_history_max_mib: float = 256.0,
        shared: SharedJobSpace | None = None,
    ) -> None:
        self.inner = inner
        self.store = store
        self.shared = shared
        self.job_retention_s = job_retention_s
        # Counters, for the status page, tests and benchmarks.
        self.hits = 0
        self.misses = 0
        self.flights_started = 0
        # Cache hits and flight members; the inner scheduler keeps its own jobs.
        self._jobs = JobRegistry(job_retention_s, int(job_history_max_mib * 2**20))
        # Open flights only: a flight leaves these tables when it closes (scheduler.single_flight).
        self._flights: dict[tuple[str, PreviewSettings], Flight] = {}
        self._flight_of: dict[str, Flight] = {}  # a member's job id -> its flight
        self._flight_run: dict[str, Flight] = {}  # the scheduler's job id -> its flight
        self._claims: dict[Flight, str] = {}  # a flight -> the run it named in the shared space
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False

    # The Scheduler interface

    async def start(self) -> None:
        await self.inner.start()

    async def wait_ready(self) -> None:
        await self.inner.wait_ready()

    async def drain(self, grace_s: float) -> None:
        self._draining = True
        await self.inner.drain(grace_s)
        if self._tasks:  # flights end with the jobs behind them; let their stores finish
            await asyncio.wait(self._tasks, timeout=STORE_TIMEOUT_S)
        await self._jobs.close()
        if self.store is not None:
            await self.store.close()
        if self.shared is not None:  # last: every job's end is written before the lease goes
            await self.shared.close()

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        await self.inner.wait_until(condition, timeout)

    def can_run_jobs(self) -> bool:
        return self.inner.can_run_jobs()

    def models(self) -> list[ModelStatus]:
        return self.inner.models()

    def default_model(self) -> str:
        return self.inner.default_model()

    def submit(
        self,
        spec: GenerationSpec,
        *,
        deadline: float | None = None,
        priority: int = 0,
        caller: str = "",
    ) -> Job:
        """A request that is not deterministic (no explicit seed): never cached."""
        job = self.inner.submit(spec, deadline=deadline, priority=priority, caller=caller)
        return self._share(job)

    async def cancel(self, job_id: str, *, deadline_exceeded: bool = False) -> None:
        """Cancel a job of this server, or ask the one running it (raises UnknownJobError)."""
        job = self._jobs.get(job_id)
        if job is None:
            flight = self._flight_run.get(job_id)
            if flight is not None:
                flight.run_cancelled()  # members still waiting get the run handed over
                if not flight.open:  # nobody waits: a newcomer must not attach to this run
                    self._leave(flight)
            try:
                await self.inner.cancel(job_id, deadline_exceeded=deadline_exceeded)
            except UnknownJobError:
                if self.shared is None or not await self.shared.cancel(job_id, deadline_exceeded):
                    raise
            return
        if job.state.finished:
            return
        job.cancel_requested = True
        job.fail(job.cancel_error(deadline_exceeded), state=JobState.CANCELLED)
        flight = self._flight_of.pop(job_id, None)
        if flight is None:
            return
        cancel_run = flight.member_left(job)
        if not flight.open:  # nobody waits for the run any more; a newcomer starts a new flight
            self._leave(flight)
        if cancel_run:
            await self.inner.cancel(flight.job.id)

    def get_job(self, job_id: str) -> Job:
        """A job of this server; raises UnknownJobError (``find_job`` also asks the others)."""
        job = self._jobs.get(job_id)
        if job is None:
            return self.inner.get_job(job_id)
        return job

    async def find_job(self, job_id: str) -> Job:
        """A job of this server, else of another server sharing the job space; raises
        UnknownJobError, or NotServingError when the shared job space cannot be reached."""
        try:
            return self.get_job(job_id)
        except UnknownJobError:
            if self.shared is None:
                raise
        try:
            remote = await self.shared.find(job_id)
        except (RedisError, OSError) as exc:
            raise NotServingError(
                f"the shared job store cannot be reached ({type(exc).__name__}); retry"
            ) from exc
        if remote is None:
            raise UnknownJobError(job_id)
        return remote

    async def visible_everywhere(self, job: Job) -> None:
        """Return once ``job`` (returned by a submit) is in the shared job space, if any."""
        if self.shared is not None:
            await self.shared.recorded(job.id)

    def _share(self, job: Job) -> Job:
        if self.shared is not None:
            self.shared.track(job)
        return job

    def status(self) -> SchedulerStatus:
        return self.inner.status()

    # Deterministic requests

    async def submit_deterministic(
        self,
        spec: GenerationSpec,
        *,
        deadline: float | None = None,
        priority: int = 0,
        caller: str = "",
    ) -> Job:
        """A request whose seed the caller chose: from the cache, or run once for all callers.

        Raises what ``Scheduler.submit`` raises (NotServingError while draining, also for hits).
        """
        if self._draining:
            raise NotServingError("the server is draining and accepts no new jobs")
        loaded = self._loaded(spec.model)
        if loaded is None:  # no replica has loaded the model: nothing could be cached yet
            return self.submit(spec, deadline=deadline, priority=priority, caller=caller)
        key = result_key(spec, loaded)
        flight_key = (key, spec.preview)
        if flight_key not in self._flights and self.store is not None:
            looked_up_at = time.monotonic()
            cached = await self._lookup(key)
            if cached is not None:
                self.hits += 1
                job = self._served_from_cache(spec, cached, looked_up_at, priority, caller)
                return self._share(job)
            self.misses += 1
        remote_run = None
        if flight_key not in self._flights and self.shared is not None:
            remote_run = await self._remote_run(flight_key)
        flight = self._flights.get(flight_key)  # one may have started while we looked
        if flight is not None and flight.open:
            return self._share(self._attach(flight, spec, deadline, priority, caller))
        if remote_run is not None:
            flight = self._open(Flight(key, flight_key, remote_run, loaded, remote=True))
            return self._share(self._attach(flight, spec, deadline, priority, caller))
        job = self.inner.submit(spec, deadline=deadline, priority=priority, caller=caller)
        flight = self._open(Flight(key, flight_key, job, loaded))
        self.flights_started += 1
        self._share(job)
        if self.shared is not None:
            await self._claim(flight)
        return job

    def _open(self, flight: Flight) -> Flight:
        self._flights[flight.flight_key] = flight
        self._flight_run[flight.job.id] = flight
        task = asyncio.create_task(self._fly(flight), name=f"flight-{flight.job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    async def _remote_run(self, flight_key: tuple[str, PreviewSettings]) -> Job | None:
        """The run another server flies for this request, if any (a failing store: none)."""
        assert self.shared is not None
        try:
            run_id = await asyncio.wait_for(
                self.shared.flight_run(_flight_name(flight_key)), LOOKUP_TIMEOUT_S
            )
            if run_id is None:
                return None
            return await asyncio.wait_for(self.shared.find(run_id), LOOKUP_TIMEOUT_S)
        except Exception as exc:  # like the cache: a shared space that fails runs the request
            log.warning(
                "shared flight lookup failed (%s: %s): running here", type(exc).__name__, exc
            )
            return None

    async def _claim(self, flight: Flight) -> None:
        assert self.shared is not None
        try:
            await asyncio.wait_for(
                self.shared.claim_flight(_flight_name(flight.flight_key), flight.job.id),
                LOOKUP_TIMEOUT_S,
            )
            self._claims[flight] = flight.job.id
        except Exception as exc:
            log.warning("shared flight not named (%s: %s)", type(exc).__name__, exc)

    async def _unclaim(self, flight: Flight) -> None:
        run_id = self._claims.pop(flight, None)
        if run_id is None or self.shared is None:
            return
        try:
            await asyncio.wait_for(
                self.shared.release_flight(_flight_name(flight.flight_key), run_id),
                STORE_TIMEOUT_S,
            )
        except Exception as exc:  # the name expires with the retention anyway
            log.warning("shared flight not released (%s: %s)", type(exc).__name__, exc)

    def _loaded(self, model_id: str) -> LoadedModel | None:
        for status in self.inner.models():
            if status.config.id == model_id:
                return status.loaded
        return None

    async def _lookup(self, key: str) -> GenerationOutput | None:
        assert self.store is not None
        try:
            data = await asyncio.wait_for(self.store.get(key), LOOKUP_TIMEOUT_S)
            return decode_output(data) if data is not None else None
        except Exception as exc:  # a cache that fails is a miss, never a failed request
            log.warning("result cache lookup failed (%s: %s): a miss", type(exc).__name__, exc)
            return None

    def _served_from_cache(
        self,
        spec: GenerationSpec,
        output: GenerationOutput,
        looked_up_at: float,
        priority: int,
        caller: str,
    ) -> Job:
        job = Job(spec, priority=priority, caller=caller)
        timings = Timings(total_s=time.monotonic() - looked_up_at)
        job.publish(dataclasses.replace(output, timings=timings, cached=True))
        self._jobs.add(job)
        return job

    def _attach(
        self,
        flight: Flight,
        spec: GenerationSpec,
        deadline: float | None,
        priority: int,
        caller: str,
    ) -> Job:
        job = Job(spec, deadline, priority=priority, caller=caller)
        self._jobs.add(job)
        self._flight_of[job.id] = flight
        flight.attach(job)
        for event in flight.job.history[: flight.seen]:
            job.publish(self._for_member(job, event))
        return job

    async def _fly(self, flight: Flight) -> None:
        """Hand the flight's events to its members; store its result; then leave the table."""
        try:
            while True:
                try:
                    async for event in flight.job.events():
                        flight.seen += 1
                        for member in list(flight.members):
                            member.publish(self._for_member(member, event))
                    break
                except SchedulerError as exc:
                    if flight.remote:  # another server's run ended without a result
                        flight.run_cancelled()
                    if not self._hand_over(flight):
                        state = flight.job.state if flight.job.state.finished else JobState.FAILED
                        for member in list(flight.members):
                            member.fail(exc, state=state)
                        return
            output = flight.job.result
            if output is not None and self.store is not None and not flight.remote:
                await self._store(flight, output)  # a remote run's server stores its result
        except SchedulerError as exc:  # the run could not be submitted again
            for member in list(flight.members):
                member.fail(exc)
        finally:
            flight.close()
            self._leave(flight)
            await self._unclaim(flight)

    def _hand_over(self, flight: Flight) -> bool:
        """After the run was cancelled, run the request again for the members still waiting.

        Raises what ``Scheduler.submit`` raises."""
        if not flight.needs_handover or self._draining:
            return False
        first = min(flight.members, key=lambda member: member.submitted_at)
        job = self.inner.submit(
            first.spec,
            deadline=first.deadline,
            priority=max(member.priority for member in flight.members),
            caller=first.caller,
        )
        log.info(
            "job %s cancelled: job %s runs it for the callers still waiting",
            short_id(flight.job.id),
            short_id(job.id),
        )
        self._flight_run.pop(flight.job.id, None)
        flight.handed_over(job)
        flight.remote = False
        self._flight_run[job.id] = flight
        return True

    def _leave(self, flight: Flight) -> None:
        for member in flight.members:
            self._flight_of.pop(member.id, None)
        if self._flights.get(flight.flight_key) is flight:
            del self._flights[flight.flight_key]
        if self._flight_run.get(flight.job.id) is flight:
            del self._flight_run[flight.job.id]

    async def _store(self, flight: Flight, output: GenerationOutput) -> None:
        assert self.store is not None
        if not produced_by(output.provenance, flight.loaded):
            log.info(
                "result of job %s not cached: its replica differs from the key",
                short_id(flight.job.id),
            )
            return
        try:
            await asyncio.wait_for(
                self.store.put(flight.key, encode_output(output)), STORE_TIMEOUT_S
            )
        except Exception as exc:  # a cache that fails is skipped
            log.warning("result cache store failed (%s: %s)", type(exc).__name__, exc)

    @staticmethod
    def _for_member(member: Job, event: JobEvent) -> JobEvent:
        """A flight's event as one member sees it: its result's total time is its own."""
        if isinstance(event, GenerationOutput):
            total = time.monotonic() - member.submitted_at
            return dataclasses.replace(
                event, timings=dataclasses.replace(event.timings, total_s=total)
            )
        return event


def _flight_name(flight_key: tuple[str, PreviewSettings]) -> str:
    """A flight's key as the shared job space names it (the same on every server)."""
    key, preview = flight_key
    return f"{key}|{preview.every_n_steps}|{preview.max_size}"
