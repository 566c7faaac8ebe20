"""A fake ``pynvml`` module: the same function names, return shapes and error classes.

Shapes follow nvidia-ml-py 13: ``nvmlDeviceGetMemoryInfo`` returns an object with ``.total``,
``.free`` and ``.used``; ``nvmlDeviceGetUtilizationRates`` one with ``.gpu`` and ``.memory``;
``nvmlDeviceGetComputeRunningProcesses`` a list of objects with ``.pid``, ``.usedGpuMemory``
(None where the driver cannot say), ``.gpuInstanceId``, ``.computeInstanceId``; names and UUIDs
are ``str``; errors are ``NVMLError`` subclasses carrying ``.value``. Every call before
``nvmlInit`` or after ``nvmlShutdown`` raises ``NVMLError_Uninitialized``, as NVML does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15

FUNCTIONS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetComputeRunningProcesses",
)
ERRORS = ("NVMLError", "NVMLError_NotSupported", "NVMLError_LibraryNotFound")


@dataclass
class FakeGpu:
    """One fake GPU; change its fields between calls to change what NVML reports."""

    uuid: str
    name: str | bytes
    total: int
    used: int
    capability: tuple[int, int] = (9, 0)
    utilization: int | None = 37  # None: NotSupported
    processes: list[tuple[int, int | None]] | None = field(default_factory=list)  # None: NotSup.
    lost: bool = False  # every call on it raises GPU_IS_LOST


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {
            NVML_ERROR_UNINITIALIZED: "Uninitialized",
            NVML_ERROR_NOT_SUPPORTED: "Not Supported",
            NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
            NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        }.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


class NVMLError_GpuIsLost(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_GPU_IS_LOST)


@dataclass(frozen=True)
class _Handle:
    index: int


def make_fake_nvml(gpus: list[FakeGpu], *, library_missing: bool = False) -> Any:
    """A module object standing in for ``pynvml``; ``.inits`` / ``.shutdowns`` count calls."""
    module: Any = ModuleType("fake_pynvml")
    module.inits = 0
    module.shutdowns = 0
    module.initialized = False
    module.NVMLError = NVMLError
    module.NVMLError_Uninitialized = NVMLError_Uninitialized
    module.NVMLError_NotSupported = NVMLError_NotSupported
    module.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    module.NVMLError_GpuIsLost = NVMLError_GpuIsLost

    def gpu(handle: _Handle) -> FakeGpu:
        if not module.initialized:
            raise NVMLError_Uninitialized()
        found = gpus[handle.index]
        if found.lost:
            raise NVMLError_GpuIsLost()
        return found

    def nvmlInit() -> None:
        if library_missing:
            raise NVMLError_LibraryNotFound()
        module.inits += 1
        module.initialized = True

    def nvmlShutdown() -> None:
        if not module.initialized:
            raise NVMLError_Uninitialized()
        module.shutdowns += 1
        module.initialized = False

    def nvmlDeviceGetCount() -> int:
        if not module.initialized:
            raise NVMLError_Uninitialized()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
        if not module.initialized:
            raise NVMLError_Uninitialized()
        return _Handle(index)

    def nvmlDeviceGetUUID(handle: _Handle) -> str:
        return gpu(handle).uuid

    def nvmlDeviceGetName(handle: _Handle) -> str | bytes:
        return gpu(handle).name

    def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
        return gpu(handle).capability

    def nvmlDeviceGetMemoryInfo(handle: _Handle) -> SimpleNamespace:
        found = gpu(handle)
        return SimpleNamespace(total=found.total, free=found.total - found.used, used=found.used)

    def nvmlDeviceGetUtilizationRates(handle: _Handle) -> SimpleNamespace:
        found = gpu(handle)
        if found.utilization is None:
            raise NVMLError_NotSupported()
        return SimpleNamespace(gpu=found.utilization, memory=found.utilization // 2)

    def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[SimpleNamespace]:
        found = gpu(handle)
        if found.processes is None:
            raise NVMLError_NotSupported()
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0, computeInstanceId=0)
            for pid, used in found.processes
        ]

    for name, function in locals().copy().items():
        if name in FUNCTIONS:
            setattr(module, name, function)
    return module
