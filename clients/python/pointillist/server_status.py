"""Typed values of the StatusService: devices, replicas and model queues (``Client.server_status``).

Plain frozen dataclasses, free of protobuf; ``pointillist.conversion`` builds them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pointillist.events import DeviceKind

__all__ = [
    "DeviceProcess",
    "DeviceStatus",
    "ModelQueueStatus",
    "ReplicaState",
    "ReplicaStatus",
    "ServerStatus",
]


class ReplicaState(enum.StrEnum):
    """Where a replica is in its life."""

    UNSPECIFIED = "unspecified"
    STARTING = "starting"
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class DeviceProcess:
    """Memory one process holds on a device."""

    pid: int
    used_bytes: int


@dataclass(frozen=True)
class DeviceStatus:
    """One device and its memory as last measured; ``free_bytes`` counts every tenant."""

    id: str
    kind: DeviceKind
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int] | None
    utilization_percent: float | None
    processes: list[DeviceProcess]


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica: a worker process running one model on one device."""

    id: str
    model: str
    device_id: str
    state: ReplicaState
    pid: int | None
    memory_bytes: int
    running_jobs: int


@dataclass(frozen=True)
class ModelQueueStatus:
    """One model's queue, replicas and per-replica footprint (None while unknown)."""

    model: str
    queued_jobs: int
    running_jobs: int
    replicas: int
    footprint_bytes: int | None
    footprint_measured: bool


@dataclass(frozen=True)
class ServerStatus:
    """What the server is doing now."""

    devices: list[DeviceStatus]
    replicas: list[ReplicaStatus]
    models: list[ModelQueueStatus]
    draining: bool
