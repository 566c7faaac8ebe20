"""Where replicas go: the fleet's placement decisions, revised at every poll.

A model first gets ``min_replicas``; a model with waiting work gains a replica where one fits
(spread across devices first, then the most free memory, always within the reserve); a device
under its reserve (another tenant grew) drains one; an idle model shrinks to its minimum.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time

from engine.config import ModelConfig
from engine.worker import CPU_THREADS_ENV
from scheduler.fleet_core import FleetCore
from scheduler.fleet_state import ModelState, Slot
from scheduler.inventory import DeviceSnapshot
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
                self._known_memory(slot)
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

    def _may_grow(self, model: ModelState) -> bool:
        starting = any(not slot.ready for slot in model.active_slots())
        maximum = model.config.max_replicas
        return not starting and (maximum is None or len(model.active_slots()) < maximum)

    def _idle(self, model: ModelState) -> bool:
        busy = len(model.queue) > 0 or any(slot.running for slot in model.slots.values())
        idle_for = time.monotonic() - model.last_activity
        return not busy and idle_for >= self.settings.idle_scale_down_s

    def _add_replica(self, model: ModelState) -> bool:
        """Start a replica where one fits; False if none does."""
        device = self._device_for(model)
        if device is None:
            return False
        model.replicas_started += 1
        replica_id = f"{model.config.id}-{model.replicas_started}"
        config, env = self._worker_config(model.config, device)
        slot = Slot(replica=Replica(replica_id, config, env=env), device=device)
        model.slots[replica_id] = slot
        slot.task = asyncio.create_task(self._run_slot(model, slot), name=f"replica-{replica_id}")
        log.info("starting replica %s on %s (%s)", replica_id, device.id, device.name)
        return True

    def _device_for(self, model: ModelState) -> DeviceSnapshot | None:
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

    def _drain_one(self, model: ModelState, candidates: list[Slot]) -> None:
        if candidates:
            self._drain(min(candidates, key=lambda slot: len(slot.running)))

    def _drain(self, slot: Slot) -> None:
        """Stop taking work on the replica; it finishes its batch, then stops."""
        slot.draining = True
        slot.stop.set()


def device_allowed(setting: str, device: DeviceSnapshot) -> bool:
    """Whether a model whose ``device`` setting is ``setting`` may run on ``device``: ``auto``
    anywhere, ``cuda`` on any GPU, ``cuda:N`` on GPU N only, ``cpu`` on the host."""
    if setting == "auto":
        return True
    kind, _, index = setting.partition(":")
    return kind == device.kind and (not index or device.engine_device == setting)
