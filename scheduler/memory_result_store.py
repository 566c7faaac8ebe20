"""The in-process result store: an LRU of encoded results, bounded in bytes."""

from __future__ import annotations

import time
from collections import OrderedDict

DEFAULT_MAX_BYTES = 256 << 20


class MemoryResultStore:
    """Keeps at most ``max_bytes`` of values, dropping the least recently used first; an entry
    older than ``ttl_s`` (None: no limit) reads as absent."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, ttl_s: float | None = None) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self.ttl_s is not None and time.monotonic() - stored_at >= self.ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic(), value)
        self._bytes += len(value)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)
