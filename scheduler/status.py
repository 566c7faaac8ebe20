"""A snapshot of the scheduler for status pages: devices, replicas, queues, footprints."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.inventory import DeviceSnapshot


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica: its model, device, state and measured memory."""

    id: str
    model: str
    device_id: str
    state: str
    pid: int | None
    memory_bytes: int
    running_jobs: int


@dataclass(frozen=True)
class ModelQueueStatus:
    """A model's queue and its measured footprint."""

    model: str
    queued_jobs: int
    running_jobs: int
    replicas: int
    footprint_bytes: int | None
    footprint_measured: bool


@dataclass(frozen=True)
class SchedulerStatus:
    """Everything GetServerStatus and ``pointillist status`` show."""

    devices: tuple[DeviceSnapshot, ...]
    replicas: tuple[ReplicaStatus, ...]
    models: tuple[ModelQueueStatus, ...]
    draining: bool
