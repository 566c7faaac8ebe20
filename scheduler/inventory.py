"""What the scheduler knows about devices: one interface, read from NVML, the host, or a file.

Implementations: ``scheduler.nvml_inventory.NvmlInventory`` (GPUs, production),
``scheduler.cpu_inventory.CpuInventory`` (the host's RAM) and
``scheduler.simulated_inventory.SimulatedInventory`` (GPUs described in a file, for tests and the
planner). The scheduler runs the same code on all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ProcessMemory:
    """Memory one process holds on a device."""

    pid: int
    used_bytes: int


@dataclass(frozen=True)
class DeviceSnapshot:
    """One device at one moment. ``kind`` is ``"cuda"`` for a GPU (real or simulated) or
    ``"cpu"``, the words ModelConfig.device and the engine use.

    ``free_bytes`` already accounts for every process on the device, ours and other tenants'.
    ``engine_device`` is what a replica placed here runs its engine on: ``"cuda:N"`` for a real
    GPU, ``"cpu"`` for the host and for simulated GPUs (their replicas are real CPU processes).
    ``visible_devices`` is the CUDA_VISIBLE_DEVICES value that pins a worker to this GPU
    (None for the CPU and simulated GPUs).
    """

    id: str
    kind: str
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    processes: tuple[ProcessMemory, ...] = ()
    compute_capability: tuple[int, int] | None = None
    utilization_percent: float | None = None
    engine_device: str = "cpu"
    visible_devices: str | None = None


class DeviceInventory(Protocol):
    """Reads devices; the scheduler polls ``snapshot`` every few seconds."""

    def snapshot(self) -> list[DeviceSnapshot]:
        """Every device, in a stable order."""

    def process_memory(self, device_id: str, pid: int) -> int | None:
        """Bytes the process ``pid`` holds on the device (NVML per-process memory on a GPU,
        resident set size on the CPU), or None if it holds nothing there / is unknown."""

    def attach(self, device_id: str, pid: int) -> None:
        """A worker process ``pid`` was placed on the device. Real devices learn that from the
        driver and ignore this; a simulated GPU starts counting that process's memory."""

    def detach(self, device_id: str, pid: int) -> None:
        """The worker left the device (stopped or died)."""
