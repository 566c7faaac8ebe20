"""The fleet scheduler's shared state and the small helpers every part of it uses.

``FleetScheduler`` (``scheduler.fleet``) is assembled from parts that each hold one policy:
``fleet_planner`` (where replicas go), ``replica_lifecycle`` (starting, measuring and restarting
them), ``dispatch`` (batches, outcomes, retries and out-of-memory policy). Each part is a class
over this core; the core declares what one part calls in another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine.config import ModelConfig
from scheduler.errors import SchedulerError
from scheduler.fleet_settings import FleetSettings
from scheduler.fleet_state import ModelState, Slot
from scheduler.footprints import Footprint, FootprintBook
from scheduler.inventory import DeviceInventory, DeviceSnapshot
from scheduler.inventory_reader import InventoryReader
from scheduler.job import Job
from scheduler.job_registry import JobRegistry


class FleetCore:
    """State shared by the fleet's parts (see the module docstring)."""

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
        self._models: dict[str, ModelState] = {}
        self._jobs = JobRegistry(
            self.settings.job_retention_s,
            int(self.settings.job_history_max_mib * 2**20),
            on_forget=self._notify,
        )
        self._devices: dict[str, DeviceSnapshot] = {}
        self.footprints = FootprintBook(self.settings.footprint_margin)
        self._draining = False
        self._stopping = False
        self._wake_planner = asyncio.Event()
        self._planner: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # replaced on every change; see wait_until
        self._reader: InventoryReader[dict[str, int]] = InventoryReader(
            inventory, self.settings.inventory_timeout_s
        )
        self._replica_bytes: dict[str, int] = {}

    @property
    def jobs(self) -> JobRegistry:
        """The jobs the fleet knows (read-only use: the status page, tests)."""
        return self._jobs

    def _footprint(self, model: ModelState, device_name: str) -> Footprint | None:
        return self.footprints.footprint(model.config.id, device_name)

    def _footprint_bytes(self, model: ModelState) -> Callable[[str], int | None]:
        def by_device_name(device_name: str) -> int | None:
            found = self._footprint(model, device_name)
            return found.bytes if found else None

        return by_device_name

    def _first_device_name(self, model: ModelState) -> str:
        for slot in model.slots.values():
            return slot.device.name
        return next(iter(self._devices.values())).name if self._devices else ""

    def _estimated_wait_s(self, model: ModelState, job: Job) -> float:
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

    def _retry_after_s(self, model: ModelState) -> float:
        """When a queue place should free up: the next job's expected time on a replica."""
        head = next(model.queue.in_service_order(), None)
        expected = model.throughput.job_seconds(head.spec) if head else None
        return max(1.0, (expected or 1.0) / max(1, len(model.ready_slots())))

    def _capacity_changed(self) -> None:
        self._wake_planner.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # Provided by the parts (fleet_planner, replica_lifecycle, dispatch), used across them.

    def _drain(self, slot: Slot) -> None:
        raise NotImplementedError

    def _replica_memory(self, slot: Slot) -> int:
        raise NotImplementedError

    def _known_memory(self, slot: Slot) -> int:
        raise NotImplementedError

    async def _serve(self, model: ModelState, slot: Slot) -> None:
        raise NotImplementedError

    async def _run_slot(self, model: ModelState, slot: Slot) -> None:
        raise NotImplementedError

    def _retry_or_fail(self, model: ModelState, job: Job, error: SchedulerError) -> None:
        raise NotImplementedError

    async def _cancel(self, job: Job, reason: SchedulerError) -> None:
        raise NotImplementedError
