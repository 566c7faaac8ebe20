"""SimulatedInventory: the file format, tenants over an injected clock, real attached processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.cpu_inventory import CpuInventory, process_rss
from scheduler.nvml_inventory import InventoryError, NvmlInventory
from scheduler.simulated_inventory import (
    SimulatedGpu,
    SimulatedInventory,
    TenantStep,
    load_inventory,
)
from tests.scheduler.fake_nvml import FakeGpu, make_fake_nvml

GIB = 1 << 30
EXAMPLE = Path(__file__).parent / "inventories" / "two_gpus.toml"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that waits on its stdin until the test ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    # Wait until the interpreter runs: read too early, a freshly forked child holds under 1 MiB.
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    yield process
    if process.poll() is None:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def test_the_example_file():
    inventory = SimulatedInventory.from_file(EXAMPLE, clock=FakeClock())

    h100, l4 = inventory.gpus
    assert h100 == SimulatedGpu(
        "sim-gpu-0", 80 * GIB, "Simulated H100 80GB", (9, 0), (TenantStep(0.0, 4 * GIB),)
    )
    assert l4.id == "sim-gpu-1"
    assert l4.total_bytes == 24 * GIB
    assert l4.compute_capability == (8, 9)
    assert l4.tenants == (
        TenantStep(0.0, 2 * GIB),
        TenantStep(60.0, 18 * GIB),
        TenantStep(120.0, 2 * GIB),
    )


def test_snapshot_of_a_simulated_gpu():
    first, second = SimulatedInventory.from_file(EXAMPLE, clock=FakeClock()).snapshot()

    assert first.id == "sim-gpu-0"
    assert first.kind == "cuda"
    assert first.name == "Simulated H100 80GB"
    assert (first.total_bytes, first.used_bytes, first.free_bytes) == (80 * GIB, 4 * GIB, 76 * GIB)
    assert first.processes == ()
    assert first.compute_capability == (9, 0)
    assert first.engine_device == "cpu"
    assert first.visible_devices is None
    assert second.free_bytes == 22 * GIB


def test_tenants_follow_their_schedule_on_the_injected_clock():
    clock = FakeClock(500.0)
    inventory = SimulatedInventory.from_file(EXAMPLE, clock=clock)

    def l4_used() -> int:
        return inventory.snapshot()[1].used_bytes

    assert l4_used() == 2 * GIB
    clock.now = 559.9
    assert l4_used() == 2 * GIB
    clock.now = 560.0
    assert l4_used() == 18 * GIB
    assert inventory.snapshot()[1].free_bytes == 6 * GIB
    clock.now = 620.0
    assert l4_used() == 2 * GIB
    assert inventory.snapshot()[0].used_bytes == 4 * GIB  # constant tenant_gib


def test_no_tenants_before_the_first_step():
    clock = FakeClock(0.0)
    gpu = SimulatedGpu.of_gib("g", 10, tenants=[(5.0, 3.0)])
    inventory = SimulatedInventory([gpu], clock=clock)

    assert inventory.tenant_usage("g") == 0
    clock.now = 5.0
    assert inventory.tenant_usage("g") == 3 * GIB


def test_set_tenant_usage_overrides_the_schedule():
    clock = FakeClock()
    inventory = SimulatedInventory.from_file(EXAMPLE, clock=clock)

    inventory.set_tenant_usage("sim-gpu-1", 20 * GIB)
    clock.now += 60.0

    assert inventory.snapshot()[1].used_bytes == 20 * GIB
    assert inventory.snapshot()[1].free_bytes == 4 * GIB
    with pytest.raises(ValueError, match="within"):
        inventory.set_tenant_usage("sim-gpu-1", 25 * GIB)
    with pytest.raises(InventoryError, match="unknown simulated GPU 'nope'"):
        inventory.set_tenant_usage("nope", 0)


def test_an_attached_process_holds_its_rss_until_detached(child):
    inventory = SimulatedInventory.from_file(EXAMPLE, clock=FakeClock())
    before = inventory.snapshot()[1]

    inventory.attach("sim-gpu-1", child.pid)
    during = inventory.snapshot()[1]

    (held,) = during.processes
    assert held.pid == child.pid
    assert held.used_bytes > 1 << 20  # a Python interpreter holds megabytes
    rss = process_rss(child.pid)
    assert rss is not None
    assert abs(held.used_bytes - rss) < 16 << 20
    assert during.used_bytes == before.used_bytes + held.used_bytes
    assert during.free_bytes == during.total_bytes - during.used_bytes
    memory = inventory.process_memory("sim-gpu-1", child.pid)
    assert memory is not None
    assert abs(memory - held.used_bytes) < 16 << 20
    assert inventory.process_memory("sim-gpu-0", child.pid) is None
    assert inventory.snapshot()[0].processes == ()

    inventory.detach("sim-gpu-1", child.pid)

    after = inventory.snapshot()[1]
    assert after.processes == ()
    assert after.used_bytes == before.used_bytes
    assert inventory.process_memory("sim-gpu-1", child.pid) is None


def test_a_process_that_exits_is_forgotten(child):
    inventory = SimulatedInventory.from_file(EXAMPLE, clock=FakeClock())
    inventory.attach("sim-gpu-0", child.pid)
    assert len(inventory.snapshot()[0].processes) == 1

    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=30)

    assert inventory.snapshot()[0].processes == ()
    assert inventory.snapshot()[0].used_bytes == 4 * GIB
    assert inventory.process_memory("sim-gpu-0", child.pid) is None
    inventory.detach("sim-gpu-0", child.pid)  # no error


def test_free_memory_never_goes_negative():
    rss = {42: 3 * GIB}
    inventory = SimulatedInventory(
        [SimulatedGpu.of_gib("tiny", 4, tenant_gib=2)], clock=FakeClock(), rss=rss.get
    )
    inventory.attach("tiny", 42)

    (device,) = inventory.snapshot()

    assert device.used_bytes == 5 * GIB
    assert device.free_bytes == 0


def test_attach_to_an_unknown_gpu_is_an_error():
    inventory = SimulatedInventory.from_file(EXAMPLE, clock=FakeClock())

    with pytest.raises(InventoryError, match="unknown simulated GPU 'gpu-9'"):
        inventory.attach("gpu-9", 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus = [", "two.toml"),
        ("", "at least one"),
        ("[server]\nx = 1\n", "unknown top-level keys server"),
        ('[[gpus]]\nname = "x"\nmemory_gib = 8\n', "'id'"),
        ('[[gpus]]\nid = "a"\n', "'memory_gib' is required"),
        ('[[gpus]]\nid = "a"\nmemory_gib = -1\n', "> 0"),
        ('[[gpus]]\nid = "a"\nmemory_gib = "big"\n', "must be a number"),
        ('[[gpus]]\nid = "a"\nmemory_gib = 8\ncolour = "red"\n', "unknown keys colour"),
        ('[[gpus]]\nid = "a"\nmemory_gib = 8\ncompute_capability = [9]\n', "compute_capability"),
        ('[[gpus]]\nid = "a"\nmemory_gib = 8\n[[gpus]]\nid = "a"\nmemory_gib = 8\n', "unique"),
        ('[[gpus]]\nid = "a"\nmemory_gib = 8\ntenant_gib = 9\n', "within 0 and the GPU"),
        (
            '[[gpus]]\nid = "a"\nmemory_gib = 8\ntenant_gib = 1\n'
            "tenants = [{ at_s = 0, used_gib = 1 }]\n",
            "not both",
        ),
        (
            '[[gpus]]\nid = "a"\nmemory_gib = 8\n'
            "tenants = [{ at_s = 5, used_gib = 1 }, { at_s = 5, used_gib = 2 }]\n",
            "increasing",
        ),
        ('[[gpus]]\nid = "a"\nmemory_gib = 8\ntenants = [{ at_s = 5 }]\n', "tenants[0]"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, text, message):
    path = tmp_path / "two.toml"
    path.write_text(text)

    with pytest.raises(InventoryError) as raised:
        SimulatedInventory.from_file(path)

    assert message in str(raised.value)
    assert "two.toml" in str(raised.value)


def test_a_missing_file_is_an_inventory_error(tmp_path):
    with pytest.raises(InventoryError, match="not found"):
        SimulatedInventory.from_file(tmp_path / "none.toml")


def test_load_inventory_by_spec(tmp_path, monkeypatch):
    assert isinstance(load_inventory(str(EXAMPLE)), SimulatedInventory)
    assert isinstance(load_inventory("cpu"), CpuInventory)
    monkeypatch.setitem(
        sys.modules, "pynvml", make_fake_nvml([FakeGpu("GPU-1", "fake", 8 * GIB, 0)])
    )
    nvml = load_inventory("nvml")
    assert isinstance(nvml, NvmlInventory)
    assert [device.id for device in nvml.snapshot()] == ["GPU-1"]
    with pytest.raises(InventoryError, match="neither 'nvml', 'cpu' nor an existing"):
        load_inventory(str(tmp_path / "missing.toml"))
