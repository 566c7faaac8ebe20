"""The GPU memory a worker holds, measured from inside the worker.

The scheduler's first source for a replica's footprint is the driver's per-process figure (NVML).
Where NVML cannot attribute memory to the worker's pid (a container without the host pid
namespace lists no processes, or host pids), the worker's own figure stands in:

    device memory = the CUDA caching allocator's reservation (``memory_reserved``)
                  + the CUDA context (the device's used memory grows by it at the first init)

The context is the drop in the device's free memory around the first CUDA init: the device's used
memory read through NVML before any CUDA call (``device_memory_used`` does not initialize CUDA
when given a device index), then ``mem_get_info`` (which creates the context) right after. When
the first reading cannot be had, the context is not counted and a warning says so. Another process
that allocates on the device during those two calls adds to the context: it is a measurement, not
an exact count, and the scheduler pads footprints with its margin.

On the CPU there is no device memory to report: ``finish`` returns None and the scheduler keeps
the resident set size. The torch calls are behind ``CudaCalls`` so tests give a fake.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("pointillist.worker")


class CudaCalls(Protocol):
    """The few ``torch.cuda`` functions the measurement needs, for one device index."""

    def is_available(self) -> bool:
        """Whether a CUDA device exists (does not create a context)."""

    def device_used(self, index: int) -> int:
        """The device's used memory as NVML reports it; must not initialize CUDA."""

    def mem_get_info(self, index: int) -> tuple[int, int]:
        """(free, total) bytes of the device; creates the CUDA context if there is none yet."""

    def memory_reserved(self, index: int) -> int:
        """Bytes the caching allocator holds on the device."""


class TorchCuda:
    """``CudaCalls`` from torch (imported on first use: the scheduler never imports torch)."""

    def is_available(self) -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def device_used(self, index: int) -> int:
        import torch

        # An int index, not None: with None torch asks for the current device, which inits CUDA.
        return int(torch.cuda.device_memory_used(index))

    def mem_get_info(self, index: int) -> tuple[int, int]:
        import torch

        free, total = torch.cuda.mem_get_info(index)
        return int(free), int(total)

    def memory_reserved(self, index: int) -> int:
        import torch

        return int(torch.cuda.memory_reserved(index))


@dataclass(frozen=True)
class DeviceMemory:
    """What a worker holds on its GPU; ``context_bytes`` None when it could not be measured."""

    reserved_bytes: int
    context_bytes: int | None
    total_device_bytes: int

    @property
    def bytes(self) -> int:
        return self.reserved_bytes + (self.context_bytes or 0)


def cuda_index(device: str, cuda: CudaCalls) -> int | None:
    """The CUDA index a ModelConfig device (``auto``, ``cpu``, ``cuda``, ``cuda:N``) will load on,
    or None for the CPU; as ``engine.loading.resolve_device`` decides it, without a CUDA init."""
    if device == "auto":
        return 0 if cuda.is_available() else None
    if device == "cuda":
        return 0  # the current device of a fresh process
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


class DeviceMemoryMeter:
    """Started before the model loads (before any CUDA call), finished after the warm-up."""

    def __init__(self, index: int | None, cuda: CudaCalls) -> None:
        self._index = index
        self._cuda = cuda
        self._context_bytes: int | None = None

    @classmethod
    def start(cls, device: str, cuda: CudaCalls | None = None) -> DeviceMemoryMeter:
        """Measure the CUDA context of ``device`` now (it is created here); nothing on the CPU."""
        calls = cuda if cuda is not None else TorchCuda()
        meter = cls(cuda_index(device, calls), calls)
        meter._measure_context()
        return meter

    def _measure_context(self) -> None:
        if self._index is None:
            return
        try:
            used_before = self._cuda.device_used(self._index)
        except Exception as exc:  # NVML missing or refusing: the context goes uncounted
            log.warning("device memory before CUDA init unknown (%s): context not counted", exc)
            used_before = None
        free, total = self._cuda.mem_get_info(self._index)
        if used_before is not None:
            self._context_bytes = max(0, (total - free) - used_before)

    def finish(self) -> DeviceMemory | None:
        """The worker's GPU memory now (after the warm-up); None on the CPU."""
        if self._index is None:
            return None
        _, total = self._cuda.mem_get_info(self._index)
        return DeviceMemory(
            reserved_bytes=self._cuda.memory_reserved(self._index),
            context_bytes=self._context_bytes,
            total_device_bytes=total,
        )
