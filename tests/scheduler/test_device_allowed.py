"""Which devices a model's ``device`` setting lets the scheduler place it on."""

from __future__ import annotations

import pytest

from scheduler.fleet import device_allowed
from scheduler.inventory import DeviceSnapshot

GPU0 = DeviceSnapshot("GPU-a", "cuda", "H100", 80, 80, 0, engine_device="cuda:0")
GPU1 = DeviceSnapshot("GPU-b", "cuda", "H100", 80, 80, 0, engine_device="cuda:1")
SIMULATED = DeviceSnapshot("sim-0", "cuda", "Simulated GPU", 80, 80, 0, engine_device="cpu")
CPU = DeviceSnapshot("cpu", "cpu", "EPYC", 24, 20, 4, engine_device="cpu")


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("auto", {"GPU-a", "GPU-b", "sim-0", "cpu"}),
        ("cuda", {"GPU-a", "GPU-b", "sim-0"}),
        ("cuda:1", {"GPU-b"}),
        ("cpu", {"cpu"}),
    ],
)
def test_device_setting_limits_placement(setting, allowed):
    devices = (GPU0, GPU1, SIMULATED, CPU)

    assert {device.id for device in devices if device_allowed(setting, device)} == allowed
