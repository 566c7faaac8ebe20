"""Where replicas go: the fleet's placement decisions, revised at every poll.

Each poll builds the placement problem (``scheduler.placement_problem``, the same one
``pointillist plan`` builds) from the inventory and what runs now, solves it with
``scheduler.placement.place`` (the replicas running now break ties: the fewest moves), and applies
the difference: drains first, then starts. So a model first gets ``min_replicas``; a model with
waiting work gains a replica where one fits; a device under its reserve (another tenant grew)
drains what no longer fits; an idle model shrinks to its minimum.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Mapping

from engine.config import ModelConfig
from engine.worker import CPU_THREADS_ENV
from scheduler.fleet_core import FleetCore
from scheduler.fleet_state import ModelState, Slot
from scheduler.inventory import DeviceSnapshot
from scheduler.placement import (
    PlacementDiff,
    ReplicaKey,
    device_capacities,
    diff_placement,
    place,
)
from scheduler.placement_estimate import estimate_footprint
from scheduler.placement_problem import (
    ModelSituation,
    eligible_devices,
    placement_problem,
    replicas_wanted,
)
from scheduler.replica import Replica

log = logging.getLogger("pointillist.scheduler")


class PlacementPlanner(FleetCore):
    """The placement half of the fleet (see the module docstring)."""

    def _replan(self, devices: list[DeviceSnapshot] | None = None) -> None:
        """Revise the placement from ``devices`` (read here, on the loop, when not given: at
        start and for ``replan_now``; the planner's polls read on a thread)."""
        if self._stopping:
            return
        if devices is None:
            devices = self._inventory.snapshot()
        self._devices = {device.id: device for device in devices}
        for model in self._models.values():
            for lifted in model.oom.lift_expired(self._devices, self._footprint_bytes(model)):
                log.info("%s: out-of-memory limit lifted: %s", model.config.id, lifted)
        diff = self._placement_diff()
        for change in diff.drains:
            self._drain_replicas(self._models[change.model_id], change.device_id, -change.delta)
        if not self._draining:
            for change in diff.adds:
                self._start_replicas(self._models[change.model_id], change.device_id, change.delta)
        self._notify()

    def placement_settled(self) -> bool:
        """Whether the placement is where the planner wants it, from the devices it last read:
        nothing to start or drain, no replica starting or draining."""
        slots = [slot for model in self._models.values() for slot in model.slots.values()]
        steady = all(slot.ready and not slot.draining for slot in slots)
        return steady and self._placement_diff().empty

    def _placement_diff(self) -> PlacementDiff:
        """What turns the replicas running now into ``place()``'s answer for the devices last
        read: the problem ``pointillist plan`` builds too, with what runs now."""
        devices, ours = list(self._devices.values()), self._ours_bytes()
        room = {
            capacity.device_id: capacity.capacity_bytes
            for capacity in device_capacities(devices, self.settings.reserve_bytes, ours)
        }
        capacities, demands = placement_problem(
            devices,
            [self._situation(model, room) for model in self._models.values()],
            reserve_bytes=self.settings.reserve_bytes,
            cpu_max_replicas=self.settings.cpu_max_replicas,
            ours_bytes=ours,
        )
        current = self._current_placement()
        return diff_placement(current, place(capacities, demands, current), demands)

    def _situation(self, model: ModelState, room: Mapping[str, int]) -> ModelSituation:
        active = model.active_slots()
        wanted = replicas_wanted(
            model.config,
            running=len(active),
            waiting=len(model.queue) > 0,
            starting=any(not slot.ready for slot in active),
            idle=self._idle(model),
        )
        caps = {
            device_id: cap
            for device_id in self._devices
            if (cap := model.oom.cap(device_id)) is not None
        }
        return ModelSituation(model.config, self._planned_footprint(model, room), wanted, caps)

    def _planned_footprint(self, model: ModelState, room: Mapping[str, int]) -> int:
        """The largest footprint known on this inventory's kinds of device; until a replica
        was measured, the same estimate as ``pointillist plan``'s, but never more than the
        roomiest device it may use offers (``room``: capacity per device id): an estimate
        must not keep a model from being tried, its first replica's measurement decides."""
        known = [
            found.bytes
            for name in {device.name for device in self._devices.values()}
            if (found := self._footprint(model, name)) is not None
        ]
        if known:
            return max(known)
        estimate = estimate_footprint(model.config).bytes
        eligible = eligible_devices(model.config.device, list(self._devices.values()))
        roomiest = max((room.get(device_id, 0) for device_id in eligible), default=0)
        return max(1, min(estimate, roomiest)) if roomiest > 0 else estimate

    def _ours_bytes(self) -> dict[str, int]:
        """Per device, what our replicas hold there, draining ones included: their memory comes
        back when they exit, so a device under its reserve drains one replica, not one a poll."""
        ours: dict[str, int] = {}
        for model in self._models.values():
            for slot in model.slots.values():
                ours[slot.device.id] = ours.get(slot.device.id, 0) + self._known_memory(slot)
        return ours

    def _current_placement(self) -> dict[ReplicaKey, int]:
        current: dict[ReplicaKey, int] = {}
        for model in self._models.values():
            for slot in model.active_slots():
                key = (slot.device.id, model.config.id)
                current[key] = current.get(key, 0) + 1
        return current

    def _idle(self, model: ModelState) -> bool:
        busy = len(model.queue) > 0 or any(slot.running for slot in model.slots.values())
        idle_for = time.monotonic() - model.last_activity
        return not busy and idle_for >= self.settings.idle_scale_down_s

    def _drain_replicas(self, model: ModelState, device_id: str, count: int) -> None:
        """Drain ``count`` ready replicas of the model on the device, the least busy first (one
        still starting is left to finish: the next poll drains it if it is still one too many)."""
        here = [s for s in model.ready_slots() if s.device.id == device_id]
        for slot in sorted(here, key=lambda slot: len(slot.running))[:count]:
            device = self._devices.get(device_id)
            log.info(
                "draining replica %s on %s (%s MiB free there, reserve %.0f MiB)",
                slot.replica.id,
                device_id,
                f"{device.free_bytes / 2**20:.0f}" if device else "?",
                self.settings.reserve_bytes / 2**20,
            )
            self._drain(slot)

    def _start_replicas(self, model: ModelState, device_id: str, count: int) -> None:
        """Start ``count`` replicas of the model on the device. A device where one of our
        replicas is draining waits for its memory to come back. A model with no footprint yet
        starts one replica and waits for its measurement: packing more on a guess is how OOMs
        happen."""
        device = self._devices[device_id]
        if any(
            slot.draining and slot.device.id == device_id
            for other in self._models.values()
            for slot in other.slots.values()
        ):
            return
        if self.footprints.footprint(model.config.id, "") is None:
            if model.active_slots():
                return
            count = 1
        for _ in range(count):
            self._add_replica(model, device)

    def _add_replica(self, model: ModelState, device: DeviceSnapshot) -> None:
        model.replicas_started += 1
        replica_id = f"{model.config.id}-{model.replicas_started}"
        config, env = self._worker_config(model.config, device)
        slot = Slot(replica=Replica(replica_id, config, env=env), device=device)
        model.slots[replica_id] = slot
        slot.task = asyncio.create_task(self._run_slot(model, slot), name=f"replica-{replica_id}")
        log.info("starting replica %s on %s (%s)", replica_id, device.id, device.name)

    def _worker_config(
        self, config: ModelConfig, device: DeviceSnapshot
    ) -> tuple[ModelConfig, dict[str, str]]:
        env = dict(self.settings.worker_env)
        if device.engine_device == "cpu":
            # Replicas sharing the host's cores each take their share: torch's threads spin
            # while they wait, and oversubscribed cores slowed steps a hundredfold here.
            share = max(1, (os.cpu_count() or 1) // max(1, self.settings.cpu_max_replicas))
            env.setdefault(CPU_THREADS_ENV, str(share))
        if config.compile:
            if self.settings.compile_cache_dir:
                cache = os.path.expanduser(self.settings.compile_cache_dir)
                env.setdefault("TORCHINDUCTOR_CACHE_DIR", cache)
            if device.engine_device == "cpu":
                # Inductor's C++ kernels bring their own OpenMP threads: spinning while torch's
                # wait (and the other way round), they made every step and decode 10-25x slower
                # on 2 cores here; passive waiting removed it.
                env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if device.visible_devices is not None:
            # Pinned by CUDA_VISIBLE_DEVICES, the worker sees its GPU as cuda:0.
            env["CUDA_VISIBLE_DEVICES"] = device.visible_devices
            return dataclasses.replace(config, device="cuda"), env
        return dataclasses.replace(config, device=device.engine_device), env

    def _drain(self, slot: Slot) -> None:
        """Stop taking work on the replica; it finishes its batch, then stops."""
        slot.draining = True
        slot.stop.set()
