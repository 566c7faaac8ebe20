"""Reads the device inventory off the event loop.

NVML (and psutil) calls block, and a wedged driver call can block for good. On the event loop
that would freeze every stream, health check and metrics scrape of the server, so the planner
reads the inventory on a thread instead: at most one read at a time, and a read that takes
longer than ``timeout_s`` is given up on (the planner keeps its last view and tries again at
the next poll, once the stuck read has returned).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from scheduler.inventory import DeviceInventory, DeviceSnapshot

log = logging.getLogger("pointillist.scheduler")

T = TypeVar("T")


class InventoryReader(Generic[T]):
    """One inventory read at a time, on a thread: the devices, plus what ``extra`` reads
    alongside (the replicas' memory, which is also a driver call)."""

    def __init__(self, inventory: DeviceInventory, timeout_s: float) -> None:
        self._inventory = inventory
        self._timeout_s = timeout_s
        self._reading: asyncio.Future[tuple[list[DeviceSnapshot], T]] | None = None

    async def read(self, extra: Callable[[], T]) -> tuple[list[DeviceSnapshot], T] | None:
        """The devices and ``extra()``, or None while a read is stuck."""
        if self._reading is not None and not self._reading.done():
            log.warning("the device inventory is still answering an earlier read; skipping")
            return None

        def both() -> tuple[list[DeviceSnapshot], T]:
            return self._inventory.snapshot(), extra()

        self._reading = asyncio.ensure_future(asyncio.to_thread(both))
        try:
            return await asyncio.wait_for(asyncio.shield(self._reading), self._timeout_s)
        except TimeoutError:
            log.error(
                "the device inventory did not answer within %.0fs: planning with the last view",
                self._timeout_s,
            )
            return None
