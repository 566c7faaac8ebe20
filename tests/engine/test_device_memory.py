"""The worker's own GPU measurement (engine.device_memory), against a fake of the torch.cuda
calls it makes; the real measurement in a fresh process where a GPU exists."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

from engine.device_memory import DeviceMemory, DeviceMemoryMeter, cuda_index

GIB = 1 << 30
MIB = 1 << 20


@dataclass
class FakeCuda:
    """One device: ``used`` by others before our context exists; ``mem_get_info`` creates the
    context (``context`` bytes) the first time, as CUDA does; ``reserved`` is the allocator's."""

    total: int = 80 * GIB
    used: int = 10 * GIB
    context: int = 500 * MIB
    reserved: int = 0
    available: bool = True
    nvml_fails: bool = False
    initialized: bool = False
    calls: list[tuple[str, int]] = field(default_factory=list)

    def is_available(self) -> bool:
        return self.available

    def device_used(self, index: int) -> int:
        self.calls.append(("device_used", index))
        if self.nvml_fails:
            raise RuntimeError("NVML Shared Library Not Found")
        return self.used + (self.context if self.initialized else 0)

    def mem_get_info(self, index: int) -> tuple[int, int]:
        self.calls.append(("mem_get_info", index))
        self.initialized = True
        return self.total - self.used - self.context - self.reserved, self.total

    def memory_reserved(self, index: int) -> int:
        self.calls.append(("memory_reserved", index))
        return self.reserved


def test_the_figure_is_the_reservation_plus_the_context_measured_at_init():
    cuda = FakeCuda()
    meter = DeviceMemoryMeter.start("cuda", cuda)
    assert cuda.calls == [("device_used", 0), ("mem_get_info", 0)]  # read before, then init
    cuda.reserved = 3 * GIB  # the model loads and warms up

    measured = meter.finish()

    assert measured == DeviceMemory(
        reserved_bytes=3 * GIB, context_bytes=500 * MIB, total_device_bytes=80 * GIB
    )
    assert measured.bytes == 3 * GIB + 500 * MIB


def test_other_tenants_before_the_worker_do_not_count():
    cuda = FakeCuda(used=70 * GIB, context=300 * MIB)
    meter = DeviceMemoryMeter.start("cuda:0", cuda)
    cuda.used += 5 * GIB  # another tenant grows during the load: not ours
    cuda.reserved = 1 * GIB

    measured = meter.finish()

    assert measured is not None and measured.bytes == 1 * GIB + 300 * MIB


def test_the_device_index_is_the_one_the_engine_loads_on():
    cuda = FakeCuda()
    DeviceMemoryMeter.start("cuda:2", cuda)
    assert {index for _, index in cuda.calls} == {2}
    assert cuda_index("auto", FakeCuda()) == 0
    assert cuda_index("auto", FakeCuda(available=False)) is None
    assert cuda_index("cpu", FakeCuda()) is None


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_on_the_cpu_nothing_is_measured_and_none_reported(device: str):
    cuda = FakeCuda(available=False)
    meter = DeviceMemoryMeter.start(device, cuda)

    assert meter.finish() is None
    assert cuda.calls == []  # not one CUDA call on the CPU


def test_without_a_reading_before_init_the_context_goes_uncounted(caplog):
    cuda = FakeCuda(nvml_fails=True)
    meter = DeviceMemoryMeter.start("cuda", cuda)
    cuda.reserved = 2 * GIB

    measured = meter.finish()

    assert measured is not None
    assert measured.context_bytes is None and measured.bytes == 2 * GIB
    assert "context not counted" in caplog.text


_MEASURE_IN_A_FRESH_PROCESS = """
import json, torch
from engine.device_memory import DeviceMemoryMeter
meter = DeviceMemoryMeter.start("cuda")
block = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
measured = meter.finish()
print(json.dumps({"bytes": measured.bytes, "reserved": measured.reserved_bytes,
                  "context": measured.context_bytes, "total": measured.total_device_bytes}))
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_real_cuda_measurement_is_plausible():
    # A fresh process: in this one CUDA may be initialized already, and the context with it.
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])

    assert measured["reserved"] >= 256 << 20
    assert measured["context"] is not None and measured["context"] > 0
    assert 0 < measured["bytes"] < measured["total"]
