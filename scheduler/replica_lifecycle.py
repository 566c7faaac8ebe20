"""A replica's life: start (load and warm up), measure, serve, restart with backoff, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from scheduler.errors import NotServingError
from scheduler.fleet_core import FleetCore
from scheduler.fleet_state import ModelState, Slot
from scheduler.footprints import ReplicaMemory, replica_memory
from scheduler.replica import ReplicaStartError

log = logging.getLogger("pointillist.scheduler")

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class ReplicaLifecycle(FleetCore):
    """Runs each slot's replica from start to stop (see the module docstring)."""

    async def _run_slot(self, model: ModelState, slot: Slot) -> None:
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

    async def _backoff(self, slot: Slot, failures: int) -> None:
        delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.stop.wait(), delay)

    def _measure(self, model: ModelState, slot: Slot) -> None:
        memory = self._replica_memory_of(slot)
        self.footprints.record(model.config.id, slot.device.name, memory.bytes)
        self._replica_bytes[slot.replica.id] = memory.bytes  # status() until the next read
        if slot.replica.loaded is not None:
            self.footprints.record_weights(model.config.id, slot.replica.loaded.weight_bytes)
        log.info(
            "replica %s measured at %.0f MiB on %s (source: %s)",
            slot.replica.id,
            memory.bytes / 2**20,
            slot.device.name,
            memory.source.value,
        )

    def _replica_memory(self, slot: Slot) -> int:
        return self._replica_memory_of(slot).bytes

    def _replica_memory_of(self, slot: Slot) -> ReplicaMemory:
        """NVML per-process memory, else the worker's own GPU figure, else its resident memory."""
        pid = slot.replica.pid
        return replica_memory(
            slot.device.kind,
            self._inventory.process_memory(slot.device.id, pid) if pid else None,
            slot.replica.device_memory_bytes,
            slot.replica.memory_bytes,
        )

    def _replica_memories(self, slots: list[Slot]) -> dict[str, int]:
        """Each replica's memory, read from the inventory (on the reader's thread)."""
        return {slot.replica.id: self._replica_memory(slot) for slot in slots}

    def _known_memory(self, slot: Slot) -> int:
        """The replica's memory as the planner last read it (no driver call on the loop)."""
        known = self._replica_bytes.get(slot.replica.id)
        return known if known is not None else slot.replica.memory_bytes

    def _detach(self, slot: Slot) -> None:
        pid = slot.replica.pid
        if pid is not None:
            self._inventory.detach(slot.device.id, pid)

    def _fail_queued(self, model: ModelState, cause: ReplicaStartError) -> None:
        """No replica of the model runs and none could start: nobody may wait for one."""
        error = NotServingError(f"no replica of {model.config.id!r} could start: {cause}")
        while (job := next(model.queue.in_service_order(), None)) is not None:
            model.queue.remove(job)
            job.fail(error)
        self._notify()
