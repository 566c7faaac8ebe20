"""What an out-of-memory error takes away from a model, and when it is given back.

A batch that ran out of memory halves the model's batch size; a single job that did lowers the
number of the model's replicas on that device by one (to none, with one replica). Either may be
the model's fault (a request too big for the device) or a passing spike by another tenant, and a
spike must cost a retry, not the model. So each limit is temporary: it is lifted after
``cooldown_s``, or as soon as the device has a replica's footprint more free memory than when the
limit was set. If the model runs out of memory again, the limit comes back, for as long again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler.inventory import DeviceSnapshot


@dataclass(frozen=True)
class DeviceCap:
    """At most ``replicas`` of the model on a device, since ``set_at``."""

    replicas: int
    set_at: float
    free_bytes_then: int


@dataclass
class OomLimits:
    """One model's out-of-memory limits: its batch size and its replicas per device."""

    full_batch: int
    cooldown_s: float
    batch_limit: int = 0
    batch_cut_at: float | None = None
    caps: dict[str, DeviceCap] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.batch_limit = self.batch_limit or self.full_batch

    def cap(self, device_id: str) -> int | None:
        found = self.caps.get(device_id)
        return found.replicas if found else None

    def cut_batch(self, ran: int) -> int:
        """A batch of ``ran`` jobs ran out of memory: batches of half that from now on."""
        self.batch_limit = max(1, ran // 2)
        self.batch_cut_at = time.monotonic()
        return self.batch_limit

    def lower_cap(self, device: DeviceSnapshot, replicas_there: int, replica_bytes: int) -> int:
        """A single job ran out of memory on ``device``: one replica fewer there.

        The memory to compare with later is what is free once that replica (``replica_bytes``)
        has left: its own memory coming back is not the device growing.
        """
        replicas = max(0, replicas_there - 1)
        free_then = device.free_bytes + (replicas_there - replicas) * replica_bytes
        self.caps[device.id] = DeviceCap(replicas, time.monotonic(), free_then)
        return replicas

    def lift_expired(
        self, devices: Mapping[str, DeviceSnapshot], footprint: Callable[[str], int | None]
    ) -> list[str]:
        """Lift every limit whose cool-down is over, or whose device has a replica's
        ``footprint`` (by device name) more free memory than then; says what it lifted."""
        now = time.monotonic()
        lifted = []
        if self.batch_cut_at is not None and now - self.batch_cut_at >= self.cooldown_s:
            lifted.append(f"batches of up to {self.full_batch} again (was {self.batch_limit})")
            self.batch_limit, self.batch_cut_at = self.full_batch, None
        for device_id, cap in list(self.caps.items()):
            device = devices.get(device_id)
            needed = footprint(device.name) if device is not None else None
            grown = (
                device is not None
                and needed is not None
                and device.free_bytes - cap.free_bytes_then >= needed
            )
            if grown or now - cap.set_at >= self.cooldown_s:
                why = "its free memory grew" if grown else f"{self.cooldown_s:.0f}s passed"
                lifted.append(f"no replica cap on {device_id} any more ({why})")
                del self.caps[device_id]
        return lifted
