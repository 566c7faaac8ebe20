"""A wedged inventory read freezes nothing (issue 13, defect 10), with real worker processes.

NVML calls block, and a stuck driver call can block for good. The planner reads the inventory on
a thread, and status and metrics answer from its last read, so a job runs to its result, and
status answers, while a read is stuck.
"""

from __future__ import annotations

import asyncio
import threading

from scheduler.inventory import DeviceSnapshot
from scheduler.simulated_inventory import SimulatedGpu, SimulatedInventory
from tests.scheduler.test_fleet import finished, fleet_on, spec

SAFETY_S = 120.0
"""A wedged read returns by itself after this, so a regression fails instead of hanging."""


class WedgedInventory(SimulatedInventory):
    """A simulated GPU whose reads can be made to hang, as a wedged NVML call does."""

    def __init__(self) -> None:
        super().__init__([SimulatedGpu.of_gib("sim-0", 16)])
        self._gate = threading.Event()
        self._gate.set()
        self.stuck = threading.Event()  # a read is waiting at the closed gate

    def wedge(self) -> None:
        self._gate.clear()

    def unwedge(self) -> None:
        self._gate.set()

    def snapshot(self) -> list[DeviceSnapshot]:
        if not self._gate.is_set():
            self.stuck.set()
            self._gate.wait(SAFETY_S)
            self.stuck.clear()
        return super().snapshot()

    def process_memory(self, device_id: str, pid: int) -> int | None:
        if not self._gate.is_set():
            self.stuck.set()
            self._gate.wait(SAFETY_S)
            self.stuck.clear()
        return super().process_memory(device_id, pid)


async def test_a_job_runs_and_status_answers_while_an_inventory_read_is_stuck():
    inventory = WedgedInventory()
    async with fleet_on(inventory, max_replicas=1) as fleet:
        inventory.wedge()
        try:
            job = fleet.submit(spec("runs while the driver hangs"))  # wakes the planner
            assert await asyncio.to_thread(inventory.stuck.wait, 60), "the planner read"

            status = fleet.status()  # from the last read: no driver call
            output = await finished(job)

            assert inventory.stuck.is_set(), "the read was still stuck when the job finished"
            assert len(output.images) == 1
            assert [replica.model for replica in status.replicas] == ["demo"]
        finally:
            inventory.unwedge()
