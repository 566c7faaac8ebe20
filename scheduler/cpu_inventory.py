"""The host as one device: its RAM is the memory replicas on the CPU share.

One device, id ``"cpu"``. Total is the host's RAM, or the container's memory limit when a cgroup
sets a lower one; free is what can be allocated without swapping (psutil's ``available``, and
within the cgroup: limit - (usage - inactive file cache), as ``docker stats`` counts it). A
process's memory is its resident set size.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import psutil

from scheduler.inventory import DeviceSnapshot

CPU_DEVICE_ID = "cpu"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def process_rss(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes; None if the process is gone (or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return int(process.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model ("AMD EPYC 7R13 Processor"), from /proc/cpuinfo or the platform module."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


class CpuInventory:
    """The host's memory as one device. ``rss`` and ``cgroup_root`` are injectable for tests."""

    def __init__(
        self,
        rss: Callable[[int], int | None] = process_rss,
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        self._rss = rss
        self._cgroup_root = cgroup_root
        self._name = cpu_name()
        psutil.cpu_percent(interval=None)  # primes the counter: the next call measures since now

    def snapshot(self) -> list[DeviceSnapshot]:
        memory = psutil.virtual_memory()
        total, available = int(memory.total), int(memory.available)
        limit = cgroup_memory(self._cgroup_root)
        if limit is not None and limit[0] < total:
            cgroup_total, cgroup_used = limit
            total = cgroup_total
            available = min(available, cgroup_total - cgroup_used)
        available = max(0, min(available, total))
        return [
            DeviceSnapshot(
                id=CPU_DEVICE_ID,
                kind="cpu",
                name=self._name,
                total_bytes=total,
                free_bytes=available,
                used_bytes=total - available,
                utilization_percent=float(psutil.cpu_percent(interval=None)),
                engine_device="cpu",
                visible_devices=None,
            )
        ]

    def process_memory(self, device_id: str, pid: int) -> int | None:
        """The process's RSS, None if the process is gone."""
        return self._rss(pid) if device_id == CPU_DEVICE_ID else None

    def attach(self, device_id: str, pid: int) -> None:
        """Nothing to do: RSS is read from the process itself."""

    def detach(self, device_id: str, pid: int) -> None:
        """Nothing to do."""


def cgroup_memory(root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """(limit, working set) of this process's memory cgroup in bytes; None when unlimited/unknown.

    cgroup v2: ``memory.max`` / ``memory.current`` / ``memory.stat`` (inactive_file) at ``root``;
    cgroup v1: the same from ``root/memory/memory.limit_in_bytes`` and friends.
    """
    for limit_file, usage_file, stat_file, inactive_key in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        (
            "memory/memory.limit_in_bytes",
            "memory/memory.usage_in_bytes",
            "memory/memory.stat",
            "total_inactive_file",
        ),
    ):
        try:
            limit_text = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit():
            return None
        limit = int(limit_text)
        if limit >= 1 << 60:  # cgroup v1 writes "unlimited" as a huge page-aligned number
            return None
        inactive = _stat(root / stat_file, inactive_key)
        return limit, max(0, usage - inactive)
    return None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
