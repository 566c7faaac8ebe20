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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from engine.job import GenerationOutput, GenerationSpec, LoadedModel, PreviewSettings, Timings
from scheduler.errors import NotServingError, SchedulerError, UnknownJobError
from scheduler.interface import ModelStatus, Scheduler
from scheduler.job import Job, JobEvent, JobState, short_id
from scheduler.result_codec import decode_output, encode_output
from scheduler.result_key import produced_by, result_key
from scheduler.result_store import ResultStore
from scheduler.single_flight import Flight
from scheduler.status import SchedulerStatus

log = logging.getLogger("pointillist.result_cache")

LOOKUP_TIMEOUT_S = 1.0
STORE_TIMEOUT_S = 5.0


class CachingScheduler:
    """A Scheduler that serves deterministic requests from ``store`` (None: no cache, but
    identical concurrent requests still run once)."""

    def __init__(
        self, inner: Scheduler, store: ResultStore | None, job_retention_s: float = 600.0
    ) -> None:
        self.inner = inner
        self.store = store
        self.job_retention_s = job_retention_s
        # Counters, for the status page, tests and benchmarks.
        self.hits = 0
        self.misses = 0
        self.flights_started = 0
        self._jobs: dict[str, Job] = {}
        # Open flights only: a flight leaves these tables when it closes (scheduler.single_flight).
        self._flights: dict[tuple[str, PreviewSettings], Flight] = {}
        self._flight_of: dict[str, Flight] = {}  # a member's job id -> its flight
        self._flight_run: dict[str, Flight] = {}  # the scheduler's job id -> its flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._last_sweep = time.monotonic()

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
        if self.store is not None:
            await self.store.close()

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
        return self.inner.submit(spec, deadline=deadline, priority=priority, caller=caller)

    async def cancel(self, job_id: str, *, deadline_exceeded: bool = False) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            flight = self._flight_run.get(job_id)
            if flight is not None:
                flight.run_cancelled()  # members still waiting get the run handed over
                if not flight.open:  # nobody waits: a newcomer must not attach to this run
                    self._leave(flight)
            await self.inner.cancel(job_id, deadline_exceeded=deadline_exceeded)
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
        job = self._jobs.get(job_id)
        if job is None:
            return self.inner.get_job(job_id)
        if self._expired(job):
            del self._jobs[job_id]
            raise UnknownJobError(job_id)
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
        self._forget_expired_jobs()
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
                return self._served_from_cache(spec, cached, looked_up_at, priority, caller)
            self.misses += 1
        flight = self._flights.get(flight_key)  # one may have started while we looked
        if flight is not None and flight.open:
            return self._attach(flight, spec, deadline, priority, caller)
        job = self.inner.submit(spec, deadline=deadline, priority=priority, caller=caller)
        flight = Flight(key, flight_key, job, loaded)
        self._flights[flight_key] = flight
        self._flight_run[job.id] = flight
        self.flights_started += 1
        task = asyncio.create_task(self._fly(flight), name=f"flight-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

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
        self._jobs[job.id] = job
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
        self._jobs[job.id] = job
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
                    if not self._hand_over(flight):
                        state = flight.job.state if flight.job.state.finished else JobState.FAILED
                        for member in list(flight.members):
                            member.fail(exc, state=state)
                        return
            output = flight.job.result
            if output is not None and self.store is not None:
                await self._store(flight, output)
        except SchedulerError as exc:  # the run could not be submitted again
            for member in list(flight.members):
                member.fail(exc)
        finally:
            flight.close()
            self._leave(flight)

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

    def _expired(self, job: Job) -> bool:
        finished = job.finished_at
        return finished is not None and time.monotonic() - finished >= self.job_retention_s

    def _forget_expired_jobs(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        for job_id, job in list(self._jobs.items()):
            if self._expired(job):
                del self._jobs[job_id]
