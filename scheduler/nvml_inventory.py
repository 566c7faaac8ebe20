"""GPUs as the driver sees them, through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

Production inventory: memory and per-process memory are what the driver reports, so a replica's
footprint is measured, not declared. One ``nvmlInit`` per inventory, ``nvmlShutdown`` on
``close``. Devices are listed in NVML index order; the id of a device is its UUID (stable across
reboots and reorderings, and accepted by ``CUDA_VISIBLE_DEVICES``).

Where a driver cannot say how much memory a process holds (``usedGpuMemory`` None: Windows WDDM,
some containers), that process is left out of ``DeviceSnapshot.processes`` and
``process_memory`` returns None; the device's free/used memory still counts it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from scheduler.inventory import DeviceSnapshot, ProcessMemory


class InventoryError(Exception):
    """A device inventory cannot be read: NVML missing or failing, a bad inventory file."""


@dataclass(frozen=True)
class _Gpu:
    index: int
    handle: Any
    uuid: str
    name: str
    compute_capability: tuple[int, int] | None


class NvmlInventory:
    """Every GPU NVML reports. ``nvml`` is the ``pynvml`` module (a fake one in tests).

    Raises InventoryError when ``pynvml`` is not installed or NVML cannot initialise (no driver,
    no GPU library). Thread-safe: NVML calls are.
    """

    def __init__(self, nvml: ModuleType | None = None) -> None:
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise InventoryError(
                    "NVML is not available: the nvidia-ml-py package (module pynvml) is missing"
                ) from exc
            nvml = pynvml
        self._nvml: Any = nvml
        self._error: type[Exception] = self._nvml.NVMLError
        try:
            self._nvml.nvmlInit()
        except self._error as exc:
            raise InventoryError(f"NVML failed to initialise: {exc}") from exc
        self._lock = threading.Lock()
        self._closed = False
        try:
            count = self._nvml.nvmlDeviceGetCount()
            self._gpus = tuple(self._describe(index) for index in range(count))
        except self._error as exc:
            self._nvml.nvmlShutdown()
            raise InventoryError(f"NVML failed to list the GPUs: {exc}") from exc

    def _describe(self, index: int) -> _Gpu:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            capability: tuple[int, int] | None = (int(major), int(minor))
        except self._error:
            capability = None
        return _Gpu(
            index=index,
            handle=handle,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            compute_capability=capability,
        )

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(gpu.uuid for gpu in self._gpus)

    def snapshot(self) -> list[DeviceSnapshot]:
        """Every GPU now, in NVML index order. Raises InventoryError if NVML fails (a lost GPU)."""
        self._check_open()
        return [self._snapshot(gpu) for gpu in self._gpus]

    def _snapshot(self, gpu: _Gpu) -> DeviceSnapshot:
        nvml = self._nvml
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(gpu.handle)
            processes = self._processes(gpu)
        except self._error as exc:
            raise InventoryError(
                f"NVML failed to read GPU {gpu.index} ({gpu.uuid}): {exc}"
            ) from exc
        return DeviceSnapshot(
            id=gpu.uuid,
            kind="cuda",
            name=gpu.name,
            total_bytes=int(memory.total),
            free_bytes=int(memory.free),
            used_bytes=int(memory.used),
            processes=tuple(
                ProcessMemory(pid, used) for pid, used in processes.items() if used is not None
            ),
            compute_capability=gpu.compute_capability,
            utilization_percent=self._utilization(gpu),
            engine_device=f"cuda:{gpu.index}",
            visible_devices=gpu.uuid,
        )

    def _utilization(self, gpu: _Gpu) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(gpu.handle).gpu)
        except self._error:  # NotSupported on some GPUs (MIG instances, vGPUs)
            return None

    def _processes(self, gpu: _Gpu) -> dict[int, int | None]:
        """pid -> bytes it holds on the GPU (None where the driver cannot say)."""
        try:
            found = self._nvml.nvmlDeviceGetComputeRunningProcesses(gpu.handle)
        except self._nvml.NVMLError_NotSupported:
            return {}
        processes: dict[int, int | None] = {}
        for process in found:
            used = process.usedGpuMemory
            pid = int(process.pid)
            if used is None or processes.get(pid, 0) is None:
                processes[pid] = None
            else:  # under MIG, one entry per GPU/compute instance it uses: add them up
                processes[pid] = (processes.get(pid) or 0) + int(used)
        return processes

    def process_memory(self, device_id: str, pid: int) -> int | None:
        """Bytes the process holds on the GPU per NVML; None if it holds none or NVML can't say."""
        self._check_open()
        gpu = self._gpu(device_id)
        try:
            return self._processes(gpu).get(pid)
        except self._error as exc:
            raise InventoryError(
                f"NVML failed to read GPU {gpu.index} ({gpu.uuid}): {exc}"
            ) from exc

    def attach(self, device_id: str, pid: int) -> None:
        """Nothing to do: the driver sees the process once it allocates."""
        self._gpu(device_id)

    def detach(self, device_id: str, pid: int) -> None:
        """Nothing to do: the driver forgets the process when it frees its memory or exits."""
        self._gpu(device_id)

    def close(self) -> None:
        """Shut NVML down (once); the inventory cannot be read afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except self._error as exc:
            raise InventoryError(f"NVML failed to shut down: {exc}") from exc

    def __enter__(self) -> NvmlInventory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _gpu(self, device_id: str) -> _Gpu:
        for gpu in self._gpus:
            if gpu.uuid == device_id:
                return gpu
        raise InventoryError(f"unknown GPU {device_id!r}; known: {', '.join(self.device_ids)}")

    def _check_open(self) -> None:
        if self._closed:
            raise InventoryError("the NVML inventory is closed")


def _text(value: str | bytes) -> str:
    """nvidia-ml-py returns str; older pynvml releases returned bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)
