"""The shared result store: Redis (``result_cache = "redis://host:port/db"``), with a time to live.

Redis being down never fails a request: the first failure is logged once, then the store answers
"absent" without touching the network until a backoff delay has passed (1 s, doubling up to
30 s), and the next call after it tries again (and logs once when Redis is back). Timeouts are
short, so a Redis that hangs costs a request at most about half a second.

Bounds: every entry expires after ``ttl_s``, and an entry larger than ``max_entry_bytes`` is not
stored. The total is Redis's own to bound: run it with ``maxmemory`` and
``maxmemory-policy allkeys-lru`` (or ``volatile-lru``), which evicts the least recently used
results when full.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("pointillist.result_cache")

DEFAULT_TTL_S = 3600.0
DEFAULT_MAX_ENTRY_BYTES = 64 << 20
TIMEOUT_S = 0.5
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


class RedisResultStore:
    """Results in Redis under their cache key, each with a time to live."""

    def __init__(
        self,
        url: str,
        ttl_s: float = DEFAULT_TTL_S,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        # No retries inside the client: this store has its own backoff, and a request must
        # not wait for reconnection attempts.
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._failures = 0
        self._retry_at = 0.0

    @property
    def available(self) -> bool:
        """False while the store waits out its backoff after a failure."""
        return self._failures == 0

    async def get(self, key: str) -> bytes | None:
        if not self._may_try():
            return None
        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_entry_bytes or not self._may_try():
            return
        try:
            await self._redis.set(key, value, px=max(1, int(self.ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._succeeded()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    def _may_try(self) -> bool:
        return self._failures == 0 or self._clock() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        if self._failures == 0:
            log.warning(
                "result cache %s unavailable (%s: %s): serving without it, retrying with backoff",
                redacted_url(self.url),
                type(exc).__name__,
                exc,
            )
        self._failures += 1
        delay = BACKOFF_S[min(self._failures, len(BACKOFF_S)) - 1]
        self._retry_at = self._clock() + delay

    def _succeeded(self) -> None:
        if self._failures:
            log.warning("result cache %s is back", redacted_url(self.url))
        self._failures = 0


def redacted_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
