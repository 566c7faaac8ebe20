"""What one replica of a model really takes on a kind of device: measured, then padded.

After a replica has loaded and warmed up at the model's largest request, the scheduler reads its
memory (``replica_memory``: NVML per-process memory on a GPU, resident memory on the CPU) and
records it here. Until a measurement exists for a kind of device, an estimate from the weights'
bytes stands in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Weights are not all a replica holds: activations at the largest request, the CUDA context,
# allocator slack. Used only until a real measurement exists.
ESTIMATE_WEIGHTS_FACTOR = 1.5
ESTIMATE_RUNTIME_BYTES = 1 << 30


@dataclass(frozen=True)
class Footprint:
    """Bytes to plan for one replica, and whether they come from a measurement."""

    bytes: int
    measured: bool


class FootprintBook:
    """Footprints per (model, device name); ``margin`` pads measurements (0.1 = 10%)."""

    def __init__(self, margin: float = 0.1) -> None:
        self.margin = margin
        self._measured: dict[tuple[str, str], int] = {}
        self._weights: dict[str, int] = {}

    def record(self, model: str, device_name: str, measured_bytes: int) -> None:
        """Keep the largest measurement: the footprint must cover every replica seen."""
        key = (model, device_name)
        self._measured[key] = max(self._measured.get(key, 0), measured_bytes)

    def record_weights(self, model: str, weight_bytes: int) -> None:
        if weight_bytes > 0:
            self._weights[model] = weight_bytes

    def footprint(self, model: str, device_name: str) -> Footprint | None:
        """The padded measurement, else the estimate from the weights, else None (unknown)."""
        measured = self._measured.get((model, device_name))
        if measured is not None:
            return Footprint(int(measured * (1 + self.margin)), measured=True)
        weights = self._weights.get(model)
        if weights is not None:
            estimate = weights * ESTIMATE_WEIGHTS_FACTOR + ESTIMATE_RUNTIME_BYTES
            return Footprint(int(estimate * (1 + self.margin)), measured=False)
        return None


class MemorySource(StrEnum):
    """Where a replica's memory figure came from, in the order they are tried."""

    # The inventory's per-process figure: NVML on a GPU, resident memory on the CPU (and the
    # worker's resident memory on a simulated GPU).
    INVENTORY = "inventory"
    # The worker's own GPU measurement (engine.device_memory): when NVML cannot attribute memory
    # to the worker's pid (containers without the host pid namespace).
    WORKER = "worker"
    # The worker's resident memory as it reported it: the last resort, a host figure.
    RESIDENT = "resident"


@dataclass(frozen=True)
class ReplicaMemory:
    """Bytes one replica holds, and which source said so."""

    bytes: int
    source: MemorySource


def replica_memory(
    device_kind: str,
    inventory_bytes: int | None,
    worker_device_bytes: int | None,
    resident_bytes: int,
) -> ReplicaMemory:
    """The inventory's per-process figure if it has one; else, on a GPU (``device_kind``
    ``"cuda"``), the worker's own measurement; else the worker's resident memory."""
    if inventory_bytes is not None:
        return ReplicaMemory(inventory_bytes, MemorySource.INVENTORY)
    if device_kind == "cuda" and worker_device_bytes is not None:
        return ReplicaMemory(worker_device_bytes, MemorySource.WORKER)
    return ReplicaMemory(resident_bytes, MemorySource.RESIDENT)
