"""CpuInventory against this machine, and the container memory limit from cgroup files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from scheduler.cpu_inventory import CpuInventory, cgroup_memory, cpu_name

GIB = 1 << 30


def test_one_cpu_device_with_the_hosts_memory(tmp_path):
    inventory = CpuInventory(cgroup_root=tmp_path)  # no cgroup files: the host's memory

    (device,) = inventory.snapshot()

    assert device.id == "cpu"
    assert device.kind == "cpu"
    assert device.name == cpu_name() != ""
    assert device.total_bytes == psutil.virtual_memory().total
    assert 0 < device.free_bytes <= device.total_bytes
    assert device.used_bytes == device.total_bytes - device.free_bytes
    assert device.engine_device == "cpu"
    assert device.visible_devices is None
    assert device.utilization_percent is not None
    assert 0.0 <= device.utilization_percent <= 100.0


def test_the_real_cgroup_never_reports_more_than_the_host():
    (device,) = CpuInventory().snapshot()

    assert 0 < device.total_bytes <= psutil.virtual_memory().total
    assert 0 <= device.free_bytes <= device.total_bytes


def test_process_memory_is_the_resident_set_size():
    inventory = CpuInventory()

    own = inventory.process_memory("cpu", os.getpid())

    assert own is not None
    assert own > 0
    assert abs(own - psutil.Process().memory_info().rss) < 64 << 20  # the same, give or take
    assert inventory.process_memory("sim-gpu-0", os.getpid()) is None


def test_process_memory_of_a_process_that_is_gone_is_none():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)

    assert CpuInventory().process_memory("cpu", child.pid) is None


def test_attach_and_detach_change_nothing():
    inventory = CpuInventory()
    inventory.attach("cpu", os.getpid())
    inventory.detach("cpu", os.getpid())

    assert inventory.snapshot()[0].processes == ()


def test_cpu_name_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n")

    assert cpu_name(cpuinfo) == "Test CPU 9000"
    assert cpu_name(tmp_path / "missing") != ""


def write_cgroup_v2(root: Path, limit: str, current: int, inactive_file: int) -> None:
    (root / "memory.max").write_text(f"{limit}\n")
    (root / "memory.current").write_text(f"{current}\n")
    (root / "memory.stat").write_text(f"anon 1\ninactive_file {inactive_file}\nactive_file 2\n")


def test_cgroup_v2_limit_and_working_set(tmp_path):
    write_cgroup_v2(tmp_path, str(4 * GIB), current=3 * GIB, inactive_file=1 * GIB)

    assert cgroup_memory(tmp_path) == (4 * GIB, 2 * GIB)


def test_cgroup_v2_without_a_limit(tmp_path):
    write_cgroup_v2(tmp_path, "max", current=3 * GIB, inactive_file=0)

    assert cgroup_memory(tmp_path) is None


def test_cgroup_v1_limit_and_unlimited(tmp_path):
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    (memory / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    (memory / "memory.stat").write_text(f"total_inactive_file {GIB // 2}\n")

    assert cgroup_memory(tmp_path) == (2 * GIB, GIB // 2)

    (memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory(tmp_path) is None


def test_a_container_limit_below_the_host_is_the_total(tmp_path):
    limit = min(psutil.virtual_memory().total // 2, 2 * GIB)
    write_cgroup_v2(tmp_path, str(limit), current=limit // 4, inactive_file=0)

    (device,) = CpuInventory(cgroup_root=tmp_path).snapshot()

    assert device.total_bytes == limit
    assert device.free_bytes <= limit - limit // 4
    assert device.used_bytes == device.total_bytes - device.free_bytes
