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
  replica count for the model, so the job moves to a replica with room.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine import ipc
from engine.config import ModelConfig
from engine.job import GenerationSpec, StepPreview, StepProgress, batch_key
from engine.worker import CPU_THREADS_ENV
from scheduler.errors import (
    CallerLimitError,
    JobCancelledError,
    JobDeadlineError,
    JobFailedError,
    JobOutOfMemoryError,
    NotServingError,
    QueueFullError,
    ReplicaCrashedError,
    ReplicaHungError,
    SchedulerError,
    UnknownJobError,
    UnknownModelError,
)
from scheduler.fair_queue import FairQueue
from scheduler.footprints import Footprint, FootprintBook, ReplicaMemory, replica_memory
from scheduler.interface import ModelStatus
from scheduler.inventory import DeviceInventory, DeviceSnapshot
from scheduler.job import Job, JobState, Queued, Started
from scheduler.oom_limits import OomLimits
from scheduler.replica import Replica, ReplicaStartError, WorkerDiedError
from scheduler.status import ModelQueueStatus, ReplicaStatus, SchedulerStatus
from scheduler.throughput import ThroughputEstimate
from scheduler.watchdog import StepClock

log = logging.getLogger("pointillist.scheduler")

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class FleetSettings:
    """The scheduler's knobs (``[scheduler]`` in the server config)."""

    reserve_bytes: int = 1 << 30
    footprint_margin: float = 0.1
    poll_interval_s: float = 2.0
    idle_scale_down_s: float = 300.0
    max_batch_size: int = 4
    batch_window_s: float = 0.0
    queue_capacity: int = 32
    # Jobs one caller may have waiting, over every model (0: no limit beyond the queue's).
    max_queued_per_caller: int = 16
    max_attempts: int = 3
    startup_timeout_s: float = 600.0
    job_retention_s: float = 600.0
    # Replicas per model on a CPU device: there, cores are the limit, not memory.
    cpu_max_replicas: int = 1
    # The hang watchdog: a replica silent for longer than watchdog_factor x the recent peak gap
    # between its events (scaled to the batch, decaying; scheduler/watchdog.py), at least
    # watchdog_floor_s and at most watchdog_ceiling_s, is recycled.
    watchdog_factor: float = 10.0
    watchdog_floor_s: float = 120.0
    watchdog_ceiling_s: float = 3600.0
    # How long an out-of-memory error's lowered batch size or replica cap lasts
    # (scheduler/oom_limits.py); a device whose free memory grows lifts its cap sooner.
    oom_cooldown_s: float = 60.0
    # Extra environment for every worker (e.g. POINTILLIST_CPU_THREADS, fault injection).
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Slot:
    """One replica on one device, and the task that runs its life."""

    replica: Replica
    device: DeviceSnapshot
    ready: bool = False
    draining: bool = False
    running: list[Job] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass
class _Model:
    """A model's queue, replicas and measurements."""

    config: ModelConfig
    queue: FairQueue
    first_ready: asyncio.Future[None]
    slots: dict[str, _Slot] = field(default_factory=dict)
    throughput: ThroughputEstimate = field(default_factory=ThroughputEstimate)
    step_clock: StepClock = field(default_factory=lambda: StepClock(10.0, 120.0))
    # The batch size and replica caps per device that out-of-memory errors lowered, for a while.
    oom: OomLimits = field(default_factory=lambda: OomLimits(full_batch=1, cooldown_s=60.0))
    last_activity: float = field(default_factory=time.monotonic)
    replicas_started: int = 0
    # How long the last replica took to start (load and warm up): a cold start's wait.
    start_s: float = 0.0
    # Whether the last replica start failed (a model scaling from zero cannot serve then).
    start_failed: bool = False

    def active_slots(self) -> list[_Slot]:
        return [slot for slot in self.slots.values() if not slot.draining]

    def ready_slots(self) -> list[_Slot]:
        return [slot for slot in self.active_slots() if slot.ready]


class FleetScheduler:
    """Packs replicas of each model onto the inventory's devices and feeds them."""

    def __init__(
        self,
        models: list[ModelConfig],
        inventory: DeviceInventory,
        settings: FleetSettings | None = None,
        *,
        default_model: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("at least one model must be configured")
        self.settings = settings or FleetSettings()
        self._inventory = inventory
        self._configs = models
        self._default_model = default_model or models[0].id
        if self._default_model not in {config.id for config in models}:
            raise ValueError(f"default model {self._default_model!r} is not configured")
        self._models: dict[str, _Model] = {}
        self._jobs: dict[str, Job] = {}
        self._devices: dict[str, DeviceSnapshot] = {}
        self.footprints = FootprintBook(self.settings.footprint_margin)
        self._draining = False
        self._stopping = False
        self._wake_planner = asyncio.Event()
        self._planner: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # replaced on every change; see wait_until
        self._last_sweep = time.monotonic()

    # The interface

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for config in self._configs:
            self._models[config.id] = _Model(
                config=config,
                queue=FairQueue(self.settings.queue_capacity),
                first_ready=loop.create_future(),
                oom=OomLimits(self.settings.max_batch_size, self.settings.oom_cooldown_s),
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
        self._forget_expired_jobs()
        position = model.queue.jobs_ahead(job)
        job.publish(Queued(position=position, estimated_wait_s=wait_s, cold_start=cold_start))
        self._jobs[job.id] = job
        model.last_activity = time.monotonic()
        self._wake_planner.set()
        return job

    async def cancel(self, job_id: str, *, deadline_exceeded: bool = False) -> None:
        job = self.get_job(job_id)
        await self._cancel(job, job.cancel_error(deadline_exceeded))

    def get_job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or self._expired(job):
            self._jobs.pop(job_id, None)
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
                        memory_bytes=self._replica_memory(slot),
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

    # Inspection, for tests and the status page

    def active_jobs(self) -> list[Job]:
        """Jobs queued or running (a drained, idle scheduler has none)."""
        return [job for job in self._jobs.values() if not job.state.finished]

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

    # Planning

    async def _plan_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_planner.wait(), self.settings.poll_interval_s)
            self._wake_planner.clear()
            try:
                self._replan()
            except Exception:
                log.exception("re-planning failed; trying again at the next poll")

    def _replan(self) -> None:
        if self._stopping:
            return
        self._devices = {device.id: device for device in self._inventory.snapshot()}
        self._relieve_memory_pressure()
        for model in self._models.values():
            for lifted in model.oom.lift_expired(self._devices, self._footprint_bytes(model)):
                log.info("%s: out-of-memory limit lifted: %s", model.config.id, lifted)
            active = len(model.active_slots())
            if self._draining:
                continue
            if active < model.config.min_replicas:
                # Every missing minimum replica that fits starts now (footprints are known
                # once one replica was measured; until then _device_for allows one).
                while len(model.active_slots()) < model.config.min_replicas:
                    if not self._add_replica(model):
                        break
            elif len(model.queue) > 0 and self._may_grow(model):
                self._add_replica(model)
            elif self._idle(model) and active > model.config.min_replicas:
                self._drain_one(model, [slot for slot in model.active_slots() if slot.ready])
        self._notify()

    def _relieve_memory_pressure(self) -> None:
        """A device under its reserve (another tenant grew) gives up one of our replicas."""
        for device in self._devices.values():
            # Replicas already draining here will give their memory back: count it as free,
            # or every poll until they exit would drain one more.
            leaving = sum(
                self._replica_memory(slot)
                for model in self._models.values()
                for slot in model.slots.values()
                if slot.draining and slot.device.id == device.id
            )
            if device.free_bytes + leaving >= self.settings.reserve_bytes:
                continue
            candidates = [
                (model, slot)
                for model in self._models.values()
                for slot in model.active_slots()
                if slot.device.id == device.id and slot.ready
            ]
            if not candidates:
                continue
            # Prefer a model above its minimum, then an idle replica, then the most replicated.
            _, slot = max(
                candidates,
                key=lambda pair: (
                    len(pair[0].active_slots()) > pair[0].config.min_replicas,
                    not pair[1].running,
                    len(pair[0].active_slots()),
                ),
            )
            log.warning(
                "device %s: %.0f MiB free, under the %.0f MiB reserve: draining replica %s",
                device.id,
                device.free_bytes / 2**20,
                self.settings.reserve_bytes / 2**20,
                slot.replica.id,
            )
            self._drain(slot)

    def _may_grow(self, model: _Model) -> bool:
        starting = any(not slot.ready for slot in model.active_slots())
        maximum = model.config.max_replicas
        return not starting and (maximum is None or len(model.active_slots()) < maximum)

    def _idle(self, model: _Model) -> bool:
        busy = len(model.queue) > 0 or any(slot.running for slot in model.slots.values())
        idle_for = time.monotonic() - model.last_activity
        return not busy and idle_for >= self.settings.idle_scale_down_s

    def _add_replica(self, model: _Model) -> bool:
        """Start a replica where one fits; False if none does."""
        device = self._device_for(model)
        if device is None:
            return False
        model.replicas_started += 1
        replica_id = f"{model.config.id}-{model.replicas_started}"
        config, env = self._worker_config(model.config, device)
        slot = _Slot(replica=Replica(replica_id, config, env=env), device=device)
        model.slots[replica_id] = slot
        slot.task = asyncio.create_task(self._run_slot(model, slot), name=f"replica-{replica_id}")
        log.info("starting replica %s on %s (%s)", replica_id, device.id, device.name)
        return True

    def _device_for(self, model: _Model) -> DeviceSnapshot | None:
        """Where the next replica fits: spread first, then the most free memory.

        A model with no footprint yet starts one replica and waits for its measurement:
        packing more on a guess is how OOMs happen.
        """
        unmeasured = self.footprints.footprint(model.config.id, "") is None
        if unmeasured and model.active_slots():
            return None
        fitting = []
        for device in self._devices.values():
            if not device_allowed(model.config.device, device):
                continue
            here = [slot for slot in model.active_slots() if slot.device.id == device.id]
            cap = model.oom.cap(device.id)
            if device.kind == "cpu":
                cap = min(cap if cap is not None else 1 << 30, self.settings.cpu_max_replicas)
            if cap is not None and len(here) >= cap:
                continue
            room = device.free_bytes - self._starting_bytes(device) - self.settings.reserve_bytes
            footprint = self._footprint(model, device.name)
            needed = footprint.bytes if footprint else 0
            if room >= needed and room > 0:
                fitting.append((len(here), -room, device.id, device))
        return min(fitting)[3] if fitting else None

    def _starting_bytes(self, device: DeviceSnapshot) -> int:
        """Memory that replicas still loading on the device will take but do not hold yet."""
        total = 0
        for model in self._models.values():
            for slot in model.active_slots():
                if slot.device.id == device.id and not slot.ready:
                    footprint = self._footprint(model, device.name)
                    total += footprint.bytes if footprint else 0
        return total

    def _worker_config(
        self, config: ModelConfig, device: DeviceSnapshot
    ) -> tuple[ModelConfig, dict[str, str]]:
        env = dict(self.settings.worker_env)
        if device.engine_device == "cpu":
            # Replicas sharing the host's cores each take their share: torch's threads spin
            # while they wait, and oversubscribed cores slowed steps a hundredfold here.
            share = max(1, (os.cpu_count() or 1) // max(1, self.settings.cpu_max_replicas))
            env.setdefault(CPU_THREADS_ENV, str(share))
        if device.visible_devices is not None:
            # Pinned by CUDA_VISIBLE_DEVICES, the worker sees its GPU as cuda:0.
            env["CUDA_VISIBLE_DEVICES"] = device.visible_devices
            return dataclasses.replace(config, device="cuda"), env
        return dataclasses.replace(config, device=device.engine_device), env

    def _drain_one(self, model: _Model, candidates: list[_Slot]) -> None:
        if candidates:
            self._drain(min(candidates, key=lambda slot: len(slot.running)))

    def _drain(self, slot: _Slot) -> None:
        """Stop taking work on the replica; it finishes its batch, then stops."""
        slot.draining = True
        slot.stop.set()

    # A replica's life

    async def _run_slot(self, model: _Model, slot: _Slot) -> None:
        failures = 0
        replica = slot.replica
        device = slot.device
        try:
            while not slot.draining and not self._stopping:
                starting_at = time.monotonic()
                try:
                    await replica.start(
                        self.settings.startup_timeout_s,
                        warm_up=model.config.largest_request(),
                        on_spawned=lambda pid: self._inventory.attach(device.id, pid),
                    )
                except ReplicaStartError as exc:
                    self._detach(slot)
                    if not model.first_ready.done() and not model.ready_slots():
                        model.first_ready.set_exception(exc)
                        return
                    failures += 1
                    log.error("%s; retrying", exc)
                    model.start_failed = True
                    if not model.ready_slots():
                        self._fail_queued(model, exc)
                    self._notify()
                    await self._backoff(slot, failures)
                    continue
                model.start_s = time.monotonic() - starting_at
                model.start_failed = False
                self._measure(model, slot)
                slot.ready = True
                failures = 0
                if not model.first_ready.done():
                    model.first_ready.set_result(None)
                self._capacity_changed()
                await self._serve(model, slot)
                slot.ready = False
                self._notify()  # capacity fell (health follows it); not only at the next poll
                if replica.exited.is_set() and not slot.draining and not self._stopping:
                    failures += 1
                    log.error("replica %s exited unexpectedly; restarting", replica.id)
                    self._detach(slot)
                    await replica.kill()
                    await self._backoff(slot, failures)
        finally:
            slot.ready = False
            await replica.stop()
            self._detach(slot)
            model.slots.pop(replica.id, None)
            self._capacity_changed()

    async def _backoff(self, slot: _Slot, failures: int) -> None:
        delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.stop.wait(), delay)

    def _measure(self, model: _Model, slot: _Slot) -> None:
        memory = self._replica_memory_of(slot)
        self.footprints.record(model.config.id, slot.device.name, memory.bytes)
        if slot.replica.loaded is not None:
            self.footprints.record_weights(model.config.id, slot.replica.loaded.weight_bytes)
        log.info(
            "replica %s measured at %.0f MiB on %s (source: %s)",
            slot.replica.id,
            memory.bytes / 2**20,
            slot.device.name,
            memory.source.value,
        )

    def _replica_memory(self, slot: _Slot) -> int:
        return self._replica_memory_of(slot).bytes

    def _replica_memory_of(self, slot: _Slot) -> ReplicaMemory:
        """NVML per-process memory, else the worker's own GPU figure, else its resident memory."""
        pid = slot.replica.pid
        return replica_memory(
            slot.device.kind,
            self._inventory.process_memory(slot.device.id, pid) if pid else None,
            slot.replica.device_memory_bytes,
            slot.replica.memory_bytes,
        )

    def _detach(self, slot: _Slot) -> None:
        pid = slot.replica.pid
        if pid is not None:
            self._inventory.detach(slot.device.id, pid)

    async def _serve(self, model: _Model, slot: _Slot) -> None:
        """Take batches from the model's queue until the replica drains, stops or dies."""
        while not slot.draining and not self._stopping and not slot.replica.exited.is_set():
            jobs = await self._next_batch(model, slot)
            if jobs:
                await self._run_batch(model, slot, jobs)

    async def _next_batch(self, model: _Model, slot: _Slot) -> list[Job]:
        waits = [
            asyncio.create_task(model.queue.wait_for_jobs()),
            asyncio.create_task(slot.stop.wait()),
            asyncio.create_task(slot.replica.exited.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if slot.draining or slot.replica.exited.is_set():
            return []
        if self.settings.batch_window_s > 0 and len(model.queue) < model.oom.batch_limit:
            # Give compatible requests a moment to arrive and share this pipeline call.
            await asyncio.sleep(self.settings.batch_window_s)
        # A batch never holds more images than the warm-up that measured the footprint.
        jobs = model.queue.take(
            model.oom.batch_limit,
            lambda job: batch_key(job.spec),
            max_images=model.config.limits.max_images,
        )
        runnable = []
        for job in jobs:
            if job.state.finished:
                continue
            if job.deadline_passed():
                job.fail(JobDeadlineError("the deadline passed while the job was queued"))
                continue
            runnable.append(job)
        return runnable

    async def _run_batch(self, model: _Model, slot: _Slot, jobs: list[Job]) -> None:
        replica = slot.replica
        assert replica.loaded is not None
        by_id = {job.id: job for job in jobs}
        slot.running = jobs
        model.last_activity = time.monotonic()
        for job in jobs:
            job.attempts += 1
            job.publish(
                Started(replica_id=replica.id, device=replica.loaded.device, batch_size=len(jobs))
            )
        self._notify()
        timers = [self._deadline_timer(replica, job) for job in jobs if job.deadline is not None]
        started = time.monotonic()
        work = sum(job.spec.width * job.spec.height * job.spec.num_images for job in jobs)
        last_event = started

        def on_step(job_id: str, event: StepProgress | StepPreview) -> None:
            nonlocal last_event
            now = time.monotonic()
            model.step_clock.observe(work, now - last_event)
            last_event = now
            by_id[job_id].publish(event)

        hung: list[str] = []
        watchdog = asyncio.create_task(
            self._watch_for_hang(model, replica, work, lambda: last_event, hung),
            name=f"watchdog-{replica.id}",
        )
        try:
            outcomes = await replica.run_batch(
                [(job.id, job.spec, job.trace_context) for job in jobs], on_step
            )
        except WorkerDiedError as exc:
            if hung:
                await watchdog  # it is killing the worker: let it finish
            error = ReplicaHungError(hung[0]) if hung else ReplicaCrashedError(str(exc))
            for job in jobs:
                self._retry_or_fail(model, job, error)
            return
        except Exception as exc:
            # Anything else on this path would end the slot's task and strand the jobs RUNNING
            # in no queue: restart the replica and put them back (or fail them, clearly).
            log.exception("running a batch on %s failed; restarting it", replica.id)
            await replica.kill()
            for job in jobs:
                self._retry_or_fail(model, job, ReplicaCrashedError(f"{replica.id}: {exc!r}"))
            return
        finally:
            if not hung:
                watchdog.cancel()
            slot.running = []
            for timer in timers:
                timer.cancel()
            model.last_activity = time.monotonic()
            self._notify()
        for job in jobs:
            job.report_worker_spans(outcomes[job.id].spans)
        out_of_memory = [job for job in jobs if _ran_out_of_memory(outcomes[job.id])]
        if out_of_memory:
            self._handle_out_of_memory(model, slot, out_of_memory)
        for job in jobs:
            outcome = outcomes[job.id]
            if isinstance(outcome, ipc.JobDone):
                share = job.spec.num_images / sum(member.spec.num_images for member in jobs)
                run_s = time.monotonic() - started
                self._succeed(model, job, outcome, run_s, share, slot.device.name)
            elif isinstance(outcome, ipc.JobCancelled):
                job.completed_steps = outcome.completed_steps
                job.steps_after_cancel = outcome.steps_after_cancel
                job.fail(self._cancel_reason(job), state=JobState.CANCELLED)
            elif not outcome.out_of_memory:
                job.fail(JobFailedError(f"the model failed: {outcome.message}"))
        self._notify()

    async def _watch_for_hang(
        self,
        model: _Model,
        replica: Replica,
        work: int,
        last_event: Callable[[], float],
        hung: list[str],
    ) -> None:
        """Kill the replica if it goes silent for longer than its model's StepClock allows;
        ``hung`` gets the reason, and the batch's WorkerDiedError becomes a ReplicaHungError."""
        while True:
            limit = model.step_clock.limit_s(work)
            silent = time.monotonic() - last_event()
            if silent < limit:
                await asyncio.sleep(limit - silent)
                continue
            reason = (
                f"replica {replica.id} made no progress for {silent:.1f}s (the limit from its "
                f"measured steps is {limit:.1f}s) and was recycled"
            )
            log.error("%s", reason)
            hung.append(reason)
            await replica.kill()
            return

    def _succeed(
        self,
        model: _Model,
        job: Job,
        outcome: ipc.JobDone,
        run_s: float,
        share: float,
        device_name: str,
    ) -> None:
        now = time.monotonic()
        # Members of a batch share the replica's time (``share``: their part of its images);
        # counting the whole time for each would grow the estimate (queue waits, RetryInfo,
        # deadline admission) with the batch size.
        model.throughput.record(
            job.spec, outcome.output.timings.denoising_s * share, run_s * share, device_name
        )
        timings = dataclasses.replace(
            outcome.output.timings,
            queue_wait_s=(job.started_at or now) - job.submitted_at,
            total_s=now - job.submitted_at,
        )
        job.publish(dataclasses.replace(outcome.output, timings=timings))

    def _handle_out_of_memory(self, model: _Model, slot: _Slot, jobs: list[Job]) -> None:
        """Split a batch that ran out of memory; a single job lowers the device's count."""
        if len(jobs) > 1:
            limit = model.oom.cut_batch(len(jobs))
            log.warning(
                "a batch of %d ran out of memory on %s: batches of %s limited to %d for %.0fs",
                len(jobs),
                slot.replica.id,
                model.config.id,
                limit,
                self.settings.oom_cooldown_s,
            )
        else:
            here = [s for s in model.active_slots() if s.device.id == slot.device.id]
            device = self._devices.get(slot.device.id, slot.device)
            cap = model.oom.lower_cap(device, len(here), self._replica_memory(slot))
            log.warning(
                "a job ran out of memory on %s: at most %d replicas of %s on %s for %.0fs, "
                "or until its free memory grows",
                slot.replica.id,
                cap,
                model.config.id,
                slot.device.id,
                self.settings.oom_cooldown_s,
            )
            if len(here) > cap:
                self._drain(slot)
            self._wake_planner.set()
        for job in reversed(jobs):
            self._retry_or_fail(
                model, job, JobOutOfMemoryError("the device ran out of memory running the job")
            )

    def _fail_queued(self, model: _Model, cause: ReplicaStartError) -> None:
        """No replica of the model runs and none could start: nobody may wait for one."""
        error = NotServingError(f"no replica of {model.config.id!r} could start: {cause}")
        while (job := next(model.queue.in_service_order(), None)) is not None:
            model.queue.remove(job)
            job.fail(error)
        self._notify()

    def _retry_or_fail(self, model: _Model, job: Job, error: SchedulerError) -> None:
        if job.cancel_requested:
            job.fail(self._cancel_reason(job), state=JobState.CANCELLED)
        elif job.attempts < self.settings.max_attempts and not self._stopping:
            log.warning("%s; job %s goes back to the head of the queue", error, job.id)
            model.queue.push_front(job)
            job.publish(
                Queued(
                    position=model.queue.jobs_ahead(job),
                    estimated_wait_s=self._estimated_wait_s(model, job),
                )
            )
        else:
            job.fail(error)

    def _deadline_timer(self, replica: Replica, job: Job) -> asyncio.Task[None]:
        async def cancel_at_deadline(deadline: float) -> None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            await replica.cancel(job.id)

        assert job.deadline is not None
        return asyncio.create_task(cancel_at_deadline(job.deadline))

    async def _cancel(self, job: Job, reason: SchedulerError) -> None:
        if job.state.finished:
            return
        job.cancel_requested = True
        job.cancel_reason = reason
        model = self._models[job.spec.model]
        if model.queue.remove(job):
            job.fail(reason, state=JobState.CANCELLED)
            self._notify()
            return
        for slot in model.slots.values():
            if job in slot.running:
                await slot.replica.cancel(job.id)
                return

    def _cancel_reason(self, job: Job) -> SchedulerError:
        if job.cancel_reason is not None:
            return job.cancel_reason
        if job.deadline_passed():
            return JobDeadlineError("the deadline passed while the job was running")
        return JobCancelledError("the job was cancelled")

    # Estimates and housekeeping

    def _footprint(self, model: _Model, device_name: str) -> Footprint | None:
        return self.footprints.footprint(model.config.id, device_name)

    def _footprint_bytes(self, model: _Model) -> Callable[[str], int | None]:
        def by_device_name(device_name: str) -> int | None:
            found = self._footprint(model, device_name)
            return found.bytes if found else None

        return by_device_name

    def _first_device_name(self, model: _Model) -> str:
        for slot in model.slots.values():
            return slot.device.name
        return next(iter(self._devices.values())).name if self._devices else ""

    def _estimated_wait_s(self, model: _Model, job: Job) -> float:
        """Work ahead of the job (queued before it, and the rest of running batches), shared
        between the model's ready replicas."""
        work = 0.0
        for queued in model.queue.in_service_order():
            if queued is job:
                break
            work += model.throughput.job_seconds(queued.spec) or 0.0
        now = time.monotonic()
        for slot in model.slots.values():
            for running in slot.running:
                expected = model.throughput.job_seconds(running.spec, slot.device.name) or 0.0
                work += max(0.0, expected - (now - (running.started_at or now)))
        return work / max(1, len(model.ready_slots()))

    def _retry_after_s(self, model: _Model) -> float:
        """When a queue place should free up: the next job's expected time on a replica."""
        head = next(model.queue.in_service_order(), None)
        expected = model.throughput.job_seconds(head.spec) if head else None
        return max(1.0, (expected or 1.0) / max(1, len(model.ready_slots())))

    def _expired(self, job: Job) -> bool:
        finished = job.finished_at
        return finished is not None and time.monotonic() - finished >= self.settings.job_retention_s

    def _forget_expired_jobs(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 1.0:
            return  # get_job checks expiry itself; this only bounds memory
        self._last_sweep = now
        for job_id, job in list(self._jobs.items()):
            if self._expired(job):
                del self._jobs[job_id]

    def _capacity_changed(self) -> None:
        self._wake_planner.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _ran_out_of_memory(outcome: ipc.JobDone | ipc.JobCancelled | ipc.JobFailed) -> bool:
    return isinstance(outcome, ipc.JobFailed) and outcome.out_of_memory


def device_allowed(setting: str, device: DeviceSnapshot) -> bool:
    """Whether a model whose ``device`` setting is ``setting`` may run on ``device``: ``auto``
    anywhere, ``cuda`` on any GPU, ``cuda:N`` on GPU N only, ``cpu`` on the host."""
    if setting == "auto":
        return True
    kind, _, index = setting.partition(":")
    return kind == device.kind and (not index or device.engine_device == setting)
