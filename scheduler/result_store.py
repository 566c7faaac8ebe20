"""Where the result cache keeps finished results: a key -> bytes store that may fail.

Two stores: ``MemoryResultStore`` (in-process, the default) and ``RedisResultStore`` (shared by
every server pointed at it). The cache above them (``scheduler.caching_scheduler``) treats any
error of a store as a miss: a request never fails because its cache did.
"""

from __future__ import annotations

from typing import Protocol


class ResultStore(Protocol):
    """Bytes by key, bounded by the store's own limits (size, time to live)."""

    async def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None (absent, expired, or the store is down)."""

    async def put(self, key: str, value: bytes) -> None:
        """Keep ``value`` under ``key`` if the store's limits allow."""

    async def close(self) -> None:
        """Release connections."""
