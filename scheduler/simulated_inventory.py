"""GPUs described in a file, for tests, demos and ``pointillist plan`` on machines without GPUs.

A simulated GPU has a size, a compute capability and other tenants whose usage changes over time.
Our replicas placed on it are real CPU processes (``engine_device`` is ``"cpu"``): once a worker
is ``attach``-ed, its resident set size counts as memory it holds on the GPU, so the scheduler
measures footprints and free memory the same way as on a real GPU.

    used = other tenants' usage + RSS of every attached process that is still alive
    free = max(0, total - used)

The file is TOML, one ``[[gpus]]`` table per GPU, in device order::

    [[gpus]]
    id = "sim-gpu-0"                # required, unique
    name = "Simulated H100 80GB"    # optional (default "Simulated GPU")
    memory_gib = 80.0               # required, > 0
    compute_capability = [9, 0]     # optional (default [9, 0])
    tenant_gib = 4.0                # optional: other tenants' usage from the start (default 0)

    [[gpus]]
    id = "sim-gpu-1"
    name = "Simulated L4"
    memory_gib = 24.0
    compute_capability = [8, 9]
    # Other tenants over time: each step holds from ``at_s`` seconds after the inventory starts
    # until the next one (0 before the first). Steps in increasing ``at_s``; used_gib <= memory.
    # Give either tenant_gib or tenants, not both.
    tenants = [
      { at_s = 0.0, used_gib = 2.0 },
      { at_s = 60.0, used_gib = 18.0 },
      { at_s = 120.0, used_gib = 2.0 },
    ]

Unknown keys, missing or ill-typed values and inconsistent schedules raise InventoryError naming
the file and the GPU. ``tests/scheduler/inventories/two_gpus.toml`` is an example.
"""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.cpu_inventory import CpuInventory, process_rss
from scheduler.inventory import DeviceInventory, DeviceSnapshot, ProcessMemory
from scheduler.nvml_inventory import InventoryError, NvmlInventory

GIB = 1 << 30
DEFAULT_NAME = "Simulated GPU"
DEFAULT_COMPUTE_CAPABILITY = (9, 0)
_GPU_KEYS = {"id", "name", "memory_gib", "compute_capability", "tenant_gib", "tenants"}
_STEP_KEYS = {"at_s", "used_gib"}


@dataclass(frozen=True)
class TenantStep:
    """From ``at_s`` seconds after the inventory starts, other tenants hold ``used_bytes``."""

    at_s: float
    used_bytes: int


@dataclass(frozen=True)
class SimulatedGpu:
    """One simulated GPU; ``tenants`` in increasing ``at_s``."""

    id: str
    total_bytes: int
    name: str = DEFAULT_NAME
    compute_capability: tuple[int, int] = DEFAULT_COMPUTE_CAPABILITY
    tenants: tuple[TenantStep, ...] = ()

    @classmethod
    def of_gib(
        cls,
        id: str,
        memory_gib: float,
        *,
        name: str = DEFAULT_NAME,
        compute_capability: tuple[int, int] = DEFAULT_COMPUTE_CAPABILITY,
        tenant_gib: float = 0.0,
        tenants: Sequence[tuple[float, float]] = (),
    ) -> SimulatedGpu:
        """Sizes in GiB; ``tenants`` as (at_s, used_gib) pairs, or a constant ``tenant_gib``."""
        steps = tuple(TenantStep(at, _bytes(used)) for at, used in tenants)
        if tenant_gib and not steps:
            steps = (TenantStep(0.0, _bytes(tenant_gib)),)
        return cls(id, _bytes(memory_gib), name, compute_capability, steps)

    def tenants_at(self, elapsed_s: float) -> int:
        """Other tenants' bytes ``elapsed_s`` seconds after the start."""
        used = 0
        for step in self.tenants:
            if step.at_s > elapsed_s:
                break
            used = step.used_bytes
        return used


class SimulatedInventory:
    """Simulated GPUs; implements ``scheduler.inventory.DeviceInventory``.

    ``clock`` (seconds, monotonic) drives the tenants' schedules from the moment the inventory is
    built; ``rss(pid)`` reads an attached process's memory (None once it is gone: it is then
    forgotten, as the driver forgets a process that exits). Thread-safe.
    """

    def __init__(
        self,
        gpus: Sequence[SimulatedGpu],
        clock: Callable[[], float] = time.monotonic,
        rss: Callable[[int], int | None] = process_rss,
    ) -> None:
        _check_gpus(gpus, where="simulated inventory")
        self._gpus = {gpu.id: gpu for gpu in gpus}
        self._clock = clock
        self._rss = rss
        self._start = clock()
        self._overrides: dict[str, int] = {}
        self._attached: dict[str, dict[int, None]] = {gpu.id: {} for gpu in gpus}
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        path: Path | str,
        clock: Callable[[], float] = time.monotonic,
        rss: Callable[[int], int | None] = process_rss,
    ) -> SimulatedInventory:
        """Read the TOML format of this module's docstring; InventoryError if it is invalid."""
        return cls(read_simulated_gpus(Path(path)), clock=clock, rss=rss)

    @property
    def gpus(self) -> tuple[SimulatedGpu, ...]:
        return tuple(self._gpus.values())

    def set_tenant_usage(self, device_id: str, used_bytes: int) -> None:
        """From now on other tenants hold ``used_bytes`` on the GPU (its schedule is dropped)."""
        gpu = self._gpu(device_id)
        if not 0 <= used_bytes <= gpu.total_bytes:
            raise ValueError(f"{device_id}: tenant usage must be within 0..{gpu.total_bytes} bytes")
        with self._lock:
            self._overrides[device_id] = used_bytes

    def tenant_usage(self, device_id: str) -> int:
        """Bytes other tenants hold on the GPU now."""
        gpu = self._gpu(device_id)
        with self._lock:
            override = self._overrides.get(device_id)
        if override is not None:
            return override
        return gpu.tenants_at(self._clock() - self._start)

    def snapshot(self) -> list[DeviceSnapshot]:
        return [self._snapshot(gpu) for gpu in self._gpus.values()]

    def _snapshot(self, gpu: SimulatedGpu) -> DeviceSnapshot:
        processes = tuple(
            ProcessMemory(pid, used)
            for pid in self._pids(gpu.id)
            if (used := self._memory_of(gpu.id, pid)) is not None
        )
        used = self.tenant_usage(gpu.id) + sum(process.used_bytes for process in processes)
        return DeviceSnapshot(
            id=gpu.id,
            kind="cuda",
            name=gpu.name,
            total_bytes=gpu.total_bytes,
            free_bytes=max(0, gpu.total_bytes - used),
            used_bytes=used,
            processes=processes,
            compute_capability=gpu.compute_capability,
            utilization_percent=None,
            engine_device="cpu",
            visible_devices=None,
        )

    def process_memory(self, device_id: str, pid: int) -> int | None:
        """The attached process's RSS; None if it is not attached here or has exited."""
        self._gpu(device_id)
        if pid not in self._pids(device_id):
            return None
        return self._memory_of(device_id, pid)

    def attach(self, device_id: str, pid: int) -> None:
        """From now on the process's RSS counts as memory it holds on the GPU."""
        self._gpu(device_id)
        with self._lock:
            self._attached[device_id][pid] = None

    def detach(self, device_id: str, pid: int) -> None:
        """The process no longer counts on the GPU (no error if it was not attached)."""
        self._gpu(device_id)
        with self._lock:
            self._attached[device_id].pop(pid, None)

    def close(self) -> None:
        """Nothing to release."""

    def _pids(self, device_id: str) -> list[int]:
        with self._lock:
            return list(self._attached[device_id])

    def _memory_of(self, device_id: str, pid: int) -> int | None:
        used = self._rss(pid)
        if used is None:  # the process is gone: forget it
            with self._lock:
                self._attached[device_id].pop(pid, None)
        return used

    def _gpu(self, device_id: str) -> SimulatedGpu:
        try:
            return self._gpus[device_id]
        except KeyError:
            known = ", ".join(self._gpus)
            raise InventoryError(f"unknown simulated GPU {device_id!r}; known: {known}") from None


def load_inventory(spec: str, clock: Callable[[], float] = time.monotonic) -> DeviceInventory:
    """``"nvml"``: the GPUs, ``"cpu"``: the host, anything else: a simulated-inventory TOML file.

    Raises InventoryError when NVML cannot start or the file is missing or invalid.
    """
    if spec == "nvml":
        return NvmlInventory()
    if spec == "cpu":
        return CpuInventory()
    path = Path(spec)
    if not path.is_file():
        raise InventoryError(
            f"inventory {spec!r} is neither 'nvml', 'cpu' nor an existing simulated-inventory file"
        )
    return SimulatedInventory.from_file(path, clock=clock)


# ---------------------------------------------------------------------------------------------
# The file


def read_simulated_gpus(path: Path) -> list[SimulatedGpu]:
    """The GPUs of a simulated-inventory TOML file; InventoryError naming what is wrong."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise InventoryError(f"simulated inventory not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InventoryError(f"{path}: {exc}") from exc
    return parse_simulated_gpus(document, where=str(path))


def parse_simulated_gpus(
    document: Mapping[str, Any], where: str = "inventory"
) -> list[SimulatedGpu]:
    """The GPUs of a parsed TOML document (see the module docstring)."""
    unknown = set(document) - {"gpus"}
    if unknown:
        raise InventoryError(f"{where}: unknown top-level keys {', '.join(sorted(unknown))}")
    entries = document.get("gpus")
    if not isinstance(entries, list) or not entries:
        raise InventoryError(f"{where}: expected at least one [[gpus]] table")
    gpus = [
        _parse_gpu(entry, f"{where}: [[gpus]] #{index + 1}") for index, entry in enumerate(entries)
    ]
    _check_gpus(gpus, where)
    return gpus


def _parse_gpu(entry: Any, where: str) -> SimulatedGpu:
    if not isinstance(entry, dict):
        raise InventoryError(f"{where}: expected a table")
    unknown = set(entry) - _GPU_KEYS
    if unknown:
        raise InventoryError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    gpu_id = entry.get("id")
    if not isinstance(gpu_id, str) or not gpu_id:
        raise InventoryError(f"{where}: 'id' (a non-empty string) is required")
    where = f"{where} ({gpu_id})"
    name = entry.get("name", DEFAULT_NAME)
    if not isinstance(name, str):
        raise InventoryError(f"{where}: 'name' must be a string")
    if "memory_gib" not in entry:
        raise InventoryError(f"{where}: 'memory_gib' is required")
    memory_gib = _number(entry["memory_gib"], "memory_gib", where)
    if memory_gib <= 0:
        raise InventoryError(f"{where}: 'memory_gib' must be > 0")
    capability = entry.get("compute_capability", list(DEFAULT_COMPUTE_CAPABILITY))
    if (
        not isinstance(capability, list)
        or len(capability) != 2
        or not all(isinstance(part, int) and part >= 0 for part in capability)
    ):
        raise InventoryError(f"{where}: 'compute_capability' must be [major, minor], e.g. [9, 0]")
    if "tenant_gib" in entry and "tenants" in entry:
        raise InventoryError(f"{where}: give 'tenant_gib' or 'tenants', not both")
    steps: list[TenantStep] = []
    if "tenant_gib" in entry:
        steps.append(TenantStep(0.0, _bytes(_number(entry["tenant_gib"], "tenant_gib", where))))
    raw_steps = entry.get("tenants", [])
    if not isinstance(raw_steps, list):
        raise InventoryError(f"{where}: 'tenants' must be a list of {{at_s, used_gib}} tables")
    for index, step in enumerate(raw_steps):
        step_where = f"{where}: tenants[{index}]"
        if not isinstance(step, dict) or set(step) != _STEP_KEYS:
            raise InventoryError(f"{step_where}: expected {{ at_s = SECONDS, used_gib = GIB }}")
        steps.append(
            TenantStep(
                _number(step["at_s"], "at_s", step_where),
                _bytes(_number(step["used_gib"], "used_gib", step_where)),
            )
        )
    return SimulatedGpu(
        id=gpu_id,
        total_bytes=_bytes(memory_gib),
        name=name,
        compute_capability=(capability[0], capability[1]),
        tenants=tuple(steps),
    )


def _check_gpus(gpus: Sequence[SimulatedGpu], where: str) -> None:
    ids = [gpu.id for gpu in gpus]
    duplicates = sorted({gpu_id for gpu_id in ids if ids.count(gpu_id) > 1})
    if duplicates:
        raise InventoryError(f"{where}: GPU ids must be unique, repeated: {', '.join(duplicates)}")
    for gpu in gpus:
        if gpu.total_bytes <= 0:
            raise InventoryError(f"{where} ({gpu.id}): memory must be > 0")
        previous = -1.0
        for step in gpu.tenants:
            if step.at_s < 0 or step.at_s <= previous:
                raise InventoryError(
                    f"{where} ({gpu.id}): tenant steps need at_s >= 0, in increasing order"
                )
            if not 0 <= step.used_bytes <= gpu.total_bytes:
                raise InventoryError(
                    f"{where} ({gpu.id}): tenants' usage must be within 0 and the GPU's memory"
                )
            previous = step.at_s


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InventoryError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def _bytes(gib: float) -> int:
    return round(gib * GIB)
