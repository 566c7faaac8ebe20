"""NvmlInventory against a fake pynvml module: the production calls, with the driver faked."""

from __future__ import annotations

import sys

import pynvml
import pytest

from scheduler.inventory import ProcessMemory
from scheduler.nvml_inventory import InventoryError, NvmlInventory
from tests.scheduler.fake_nvml import ERRORS, FUNCTIONS, FakeGpu, make_fake_nvml

GIB = 1 << 30


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            uuid="GPU-aaaa-0000",
            name="NVIDIA H100 80GB HBM3",
            total=80 * GIB,
            used=20 * GIB,
            capability=(9, 0),
            utilization=55,
            processes=[(1234, 12 * GIB), (5678, 6 * GIB)],
        ),
        FakeGpu(
            uuid="GPU-bbbb-1111",
            name=b"NVIDIA L4",  # older pynvml releases returned bytes
            total=24 * GIB,
            used=1 * GIB,
            capability=(8, 9),
        ),
    ]


def test_fake_has_the_real_pynvml_names():
    for name in FUNCTIONS + ERRORS:
        assert hasattr(pynvml, name), name
    memory_fields = {name for name, _ in pynvml.c_nvmlMemory_t._fields_}
    assert {"total", "free", "used"} <= memory_fields
    process_fields = {name for name, _ in pynvml.c_nvmlProcessInfo_t._fields_}
    assert {"pid", "usedGpuMemory"} <= process_fields
    assert {name for name, _ in pynvml.c_nvmlUtilization_t._fields_} == {"gpu", "memory"}


def test_snapshot_reports_every_field_of_every_gpu():
    nvml = make_fake_nvml(two_gpus())
    inventory = NvmlInventory(nvml=nvml)

    first, second = inventory.snapshot()

    assert first.id == "GPU-aaaa-0000"
    assert first.kind == "cuda"
    assert first.name == "NVIDIA H100 80GB HBM3"
    assert (first.total_bytes, first.free_bytes, first.used_bytes) == (80 * GIB, 60 * GIB, 20 * GIB)
    assert first.processes == (ProcessMemory(1234, 12 * GIB), ProcessMemory(5678, 6 * GIB))
    assert first.compute_capability == (9, 0)
    assert first.utilization_percent == 55.0
    assert first.engine_device == "cuda:0"
    assert first.visible_devices == "GPU-aaaa-0000"
    assert second.id == "GPU-bbbb-1111"
    assert second.name == "NVIDIA L4"
    assert second.compute_capability == (8, 9)
    assert second.processes == ()
    assert second.engine_device == "cuda:1"
    assert second.visible_devices == "GPU-bbbb-1111"
    assert nvml.inits == 1


def test_snapshot_follows_the_driver():
    gpus = two_gpus()
    inventory = NvmlInventory(nvml=make_fake_nvml(gpus))
    gpus[0].used = 70 * GIB
    gpus[0].processes = [(1234, 62 * GIB)]

    first = inventory.snapshot()[0]

    assert first.free_bytes == 10 * GIB
    assert first.processes == (ProcessMemory(1234, 62 * GIB),)


def test_process_memory_from_the_process_list():
    inventory = NvmlInventory(nvml=make_fake_nvml(two_gpus()))

    assert inventory.process_memory("GPU-aaaa-0000", 1234) == 12 * GIB
    assert inventory.process_memory("GPU-aaaa-0000", 4321) is None
    assert inventory.process_memory("GPU-bbbb-1111", 1234) is None


def test_process_memory_unknown_to_the_driver_is_none_and_left_out_of_the_snapshot():
    gpus = two_gpus()
    gpus[0].processes = [(1234, None), (5678, 6 * GIB)]
    inventory = NvmlInventory(nvml=make_fake_nvml(gpus))

    assert inventory.process_memory("GPU-aaaa-0000", 1234) is None
    assert inventory.snapshot()[0].processes == (ProcessMemory(5678, 6 * GIB),)


def test_unsupported_utilization_and_process_list_are_tolerated():
    gpus = two_gpus()
    gpus[0].utilization = None
    gpus[0].processes = None
    inventory = NvmlInventory(nvml=make_fake_nvml(gpus))

    first = inventory.snapshot()[0]

    assert first.utilization_percent is None
    assert first.processes == ()
    assert first.free_bytes == 60 * GIB
    assert inventory.process_memory("GPU-aaaa-0000", 1234) is None


def test_init_failure_is_an_inventory_error():
    nvml = make_fake_nvml(two_gpus(), library_missing=True)

    with pytest.raises(InventoryError, match="NVML failed to initialise: NVML Shared Library"):
        NvmlInventory(nvml=nvml)


def test_missing_pynvml_is_an_inventory_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError

    with pytest.raises(InventoryError, match="nvidia-ml-py"):
        NvmlInventory()


def test_default_module_is_pynvml(monkeypatch):
    fake = make_fake_nvml(two_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    with NvmlInventory() as inventory:
        assert [device.id for device in inventory.snapshot()] == ["GPU-aaaa-0000", "GPU-bbbb-1111"]
    assert fake.shutdowns == 1


def test_a_lost_gpu_is_an_inventory_error():
    gpus = two_gpus()
    inventory = NvmlInventory(nvml=make_fake_nvml(gpus))
    gpus[1].lost = True

    with pytest.raises(InventoryError, match=r"GPU 1 \(GPU-bbbb-1111\): GPU is lost"):
        inventory.snapshot()


def test_close_shuts_nvml_down_once_and_the_inventory_stops_reading():
    nvml = make_fake_nvml(two_gpus())
    inventory = NvmlInventory(nvml=nvml)

    inventory.close()
    inventory.close()

    assert (nvml.inits, nvml.shutdowns) == (1, 1)
    with pytest.raises(InventoryError, match="closed"):
        inventory.snapshot()


def test_attach_and_detach_are_no_ops_but_check_the_device():
    nvml = make_fake_nvml(two_gpus())
    inventory = NvmlInventory(nvml=nvml)
    before = inventory.snapshot()

    inventory.attach("GPU-aaaa-0000", 999)
    inventory.detach("GPU-aaaa-0000", 999)

    assert inventory.snapshot() == before
    with pytest.raises(InventoryError, match="unknown GPU 'GPU-nope'"):
        inventory.attach("GPU-nope", 999)
