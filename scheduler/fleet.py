"""Replicas packed onto devices by measured memory, fed from fair priority queues, in batches.

The production scheduler behind ``scheduler.interface``:
- **Placement**: each model starts ``min_replicas`` replicas; a replica goes where the device's
  free memory, less the operator's reserve, holds the model's footprint, spreading a model across
  devices before doubling up. The footprint is measured (``scheduler.footprints``) once a
  replica has warmed up at the model's largest request.
- **Re-planning** every ``poll_interval_s`` (and at once when demand or capacity changes): a
  device whose free memory fell under the reserve (another tenant grew) drains one replica, which
  finishes its work first; a model with waiting jobs gains a replica where one fits; a model idle
  for ``idle_scale_down_s`` shrinks to its minimum.
- **Dispatch**: one ``FairQueue`` per model (priority, then callers in turn); each replica takes
  the next job plus compatible waiting ones (``engine.job.batch_key``) up to the batch limit.
- **Faults**: a worker that dies has its jobs put back at the head of the queue (up to
  ``max_attempts`` runs each) and is restarted with backoff; an out-of-memory batch is split
  (the model's batch limit halves) and a single job that runs out of memory lowers that device's
  replica count for the model, so the job moves to a replica with room, both for a while.

This module is the interface and the planning loop; each policy has a module of its own:
``fleet_planner`` (placement), ``replica_lifecycle`` (start, measure, restart),
``dispatch`` (batches, outcomes, retries, out-of-memory), ``fleet_core`` (shared state and
estimates), ``fleet_state`` (per-replica and per-model records), ``fleet_settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from engine.job import GenerationSpec
from scheduler.dispatch import Dispatch
from scheduler.errors import (
    CallerLimitError,
    JobDeadlineError,
    NotServingError,
    QueueFullError,
    UnknownJobError,
    UnknownModelError,
)
from scheduler.fair_queue import FairQueue
from scheduler.fleet_planner import PlacementPlanner
from scheduler.fleet_settings import FleetSettings
from scheduler.fleet_state import ModelState
from scheduler.interface import ModelStatus
from scheduler.job import Job, Queued
from scheduler.oom_limits import OomLimits
from scheduler.placement_problem import device_allowed
from scheduler.replica import Replica
from scheduler.replica_lifecycle import ReplicaLifecycle
from scheduler.status import ModelQueueStatus, ReplicaStatus, SchedulerStatus
from scheduler.watchdog import StepClock

__all__ = ["FleetScheduler", "FleetSettings", "device_allowed"]

log = logging.getLogger("pointillist.scheduler")


class FleetScheduler(Dispatch, ReplicaLifecycle, PlacementPlanner):
    """Packs replicas of each model onto the inventory's devices and feeds them."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for config in self._configs:
            self._models[config.id] = ModelState(
                config=config,
                queue=FairQueue(self.settings.queue_capacity),
                first_ready=loop.create_future(),
                # A compiled model runs one request at a time: its graphs are a lone request's
                # shapes (engine.compiled), and a batch would run eager, so a member's image
                # would depend on whether it was batched.
                oom=OomLimits(
                    1 if config.compile else self.settings.max_batch_size,
                    self.settings.oom_cooldown_s,
                ),
                step_clock=StepClock(
                    self.settings.watchdog_factor,
                    self.settings.watchdog_floor_s,
                    self.settings.watchdog_ceiling_s,
                ),
            )
        for model in self._models.values():
            if model.config.min_replicas == 0:
                # Scales from zero: it takes jobs at once, and the first one starts a replica.
                model.first_ready.set_result(None)
        self._replan()
        self._planner = asyncio.create_task(self._plan_loop(), name="planner")

    async def wait_ready(self) -> None:
        for model in self._models.values():
            await model.first_ready

    async def drain(self, grace_s: float) -> None:
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        with contextlib.suppress(TimeoutError):
            await self.wait_until(lambda: not self.active_jobs(), timeout=grace_s)
        if self.active_jobs():
            log.warning("drain grace of %.0fs over: cancelling unfinished jobs", grace_s)
            shutdown = NotServingError("the server shut down before the job finished")
            for job in self.active_jobs():
                await self._cancel(job, shutdown)
            remaining = max(5.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await self.wait_until(lambda: not self.active_jobs(), timeout=remaining)
        self._stopping = True
        if self._planner is not None:
            self._planner.cancel()
            await asyncio.gather(self._planner, return_exceptions=True)
        slots = [slot for model in self._models.values() for slot in model.slots.values()]
        for slot in slots:
            slot.draining = True
            slot.stop.set()
        await asyncio.gather(*(slot.task for slot in slots if slot.task), return_exceptions=True)
        # Last: the expiry timer is the one task left, and awaiting it must not give a replica
        # loop a turn between the stop flag and the stop events above.
        await self._jobs.close()

    def models(self) -> list[ModelStatus]:
        statuses = []
        for model in self._models.values():
            loaded = next(
                (slot.replica.loaded for slot in model.slots.values() if slot.replica.loaded),
                None,
            )
            statuses.append(ModelStatus(model.config, loaded, bool(model.ready_slots())))
        return statuses

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
        model = self._models.get(spec.model)
        if model is None:
            raise UnknownModelError(spec.model, list(self._models))
        if not model.first_ready.done():
            raise NotServingError(f"model {spec.model!r} is warming up", retry_after_s=5.0)
        if model.queue.full:
            raise QueueFullError(spec.model, model.queue.capacity, self._retry_after_s(model))
        limit = self.settings.max_queued_per_caller
        if limit and sum(m.queue.caller_jobs(caller) for m in self._models.values()) >= limit:
            raise CallerLimitError("queued jobs", limit, self._retry_after_s(model))
        job = Job(spec, deadline, priority=priority, caller=caller)
        cold_start = not model.ready_slots()
        model.queue.push(job)
        wait_s = self._estimated_wait_s(model, job) + (model.start_s if cold_start else 0.0)
        if deadline is not None and time.monotonic() + wait_s > deadline:
            model.queue.remove(job)
            raise JobDeadlineError(
                f"the job would start in about {wait_s:.1f}s, after its deadline"
            )
        position = model.queue.jobs_ahead(job)
        job.publish(Queued(position=position, estimated_wait_s=wait_s, cold_start=cold_start))
        self._jobs.add(job)
        model.last_activity = time.monotonic()
        self._wake_planner.set()
        return job

    async def cancel(self, job_id: str, *, deadline_exceeded: bool = False) -> None:
        job = self.get_job(job_id)
        await self._cancel(job, job.cancel_error(deadline_exceeded))

    def get_job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    def status(self) -> SchedulerStatus:
        replicas = []
        models = []
        for model in self._models.values():
            for slot in model.slots.values():
                replicas.append(
                    ReplicaStatus(
                        id=slot.replica.id,
                        model=model.config.id,
                        device_id=slot.device.id,
                        state=slot.replica.state.value,
                        pid=slot.replica.pid,
                        memory_bytes=self._known_memory(slot),
                        running_jobs=len(slot.running),
                    )
                )
            footprint = self._footprint(model, self._first_device_name(model))
            models.append(
                ModelQueueStatus(
                    model=model.config.id,
                    queued_jobs=len(model.queue),
                    running_jobs=sum(len(slot.running) for slot in model.slots.values()),
                    replicas=len(model.active_slots()),
                    footprint_bytes=footprint.bytes if footprint else None,
                    footprint_measured=bool(footprint and footprint.measured),
                )
            )
        return SchedulerStatus(
            devices=tuple(self._devices.values()),
            replicas=tuple(replicas),
            models=tuple(models),
            draining=self._draining,
        )

    def active_jobs(self) -> list[Job]:
        """Jobs queued or running (a drained, idle scheduler has none)."""
        return self._jobs.active()

    def replicas(self, model: str, *, ready_only: bool = True) -> list[Replica]:
        slots = self._models[model].active_slots()
        return [slot.replica for slot in slots if slot.ready or not ready_only]

    def batch_limit(self, model: str) -> int:
        """How many jobs one batch of ``model`` may hold now (out-of-memory errors lower it)."""
        return self._models[model].oom.batch_limit

    def replan_now(self) -> None:
        """Re-plan at once (reading the inventory afresh) instead of at the next poll."""
        self._replan()

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait for the scheduler's state to satisfy ``condition``; raise TimeoutError."""
        async with asyncio.timeout(timeout):
            while not condition():
                changed = self._changed
                await changed.wait()

    def can_run_jobs(self) -> bool:
        """Whether a job can run now: some model has a ready replica, or scales from zero
        (``min_replicas = 0``) and its last replica start did not fail."""
        return any(
            model.ready_slots() or (model.config.min_replicas == 0 and not model.start_failed)
            for model in self._models.values()
        )

    async def _plan_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_planner.wait(), self.settings.poll_interval_s)
            self._wake_planner.clear()
            try:
                slots = [slot for model in self._models.values() for slot in model.slots.values()]
                read = await self._reader.read(functools.partial(self._replica_memories, slots))
                if read is not None:
                    devices, self._replica_bytes = read
                    self._replan(devices)
            except Exception:
                log.exception("re-planning failed; trying again at the next poll")
