"""What the fleet keeps per replica (``Slot``) and per model (``ModelState``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from engine.config import ModelConfig
from scheduler.fair_queue import FairQueue
from scheduler.inventory import DeviceSnapshot
from scheduler.job import Job
from scheduler.oom_limits import OomLimits
from scheduler.replica import Replica
from scheduler.throughput import ThroughputEstimate
from scheduler.watchdog import StepClock


@dataclass
class Slot:
    """One replica on one device, and the task that runs its life."""

    replica: Replica
    device: DeviceSnapshot
    ready: bool = False
    draining: bool = False
    running: list[Job] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass
class ModelState:
    """A model's queue, replicas and measurements."""

    config: ModelConfig
    queue: FairQueue
    first_ready: asyncio.Future[None]
    slots: dict[str, Slot] = field(default_factory=dict)
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

    def active_slots(self) -> list[Slot]:
        return [slot for slot in self.slots.values() if not slot.draining]

    def ready_slots(self) -> list[Slot]:
        return [slot for slot in self.active_slots() if slot.ready]
