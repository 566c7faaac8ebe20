"""The Redis result store against a real redis-server: TTL, size limit, down and back."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from bench.redis_process import RedisProcess, free_port
from scheduler.redis_result_store import BACKOFF_S, RedisResultStore


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.kill()


class Clock:
    """A clock the test moves, for the store's backoff (asyncio keeps the real one)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_values_round_trip_with_a_time_to_live(redis_server: RedisProcess) -> None:
    store = RedisResultStore(redis_server.url, ttl_s=30.0)
    await store.put("pointillist:result:v1:a", b"\x00bytes\xff")
    assert await store.get("pointillist:result:v1:a") == b"\x00bytes\xff"
    assert await store.get("pointillist:result:v1:absent") is None
    ttl_ms = redis.Redis(port=redis_server.port).pttl("pointillist:result:v1:a")
    assert 0 < ttl_ms <= 30_000
    await store.close()


async def test_an_entry_over_the_size_limit_is_not_stored(redis_server: RedisProcess) -> None:
    store = RedisResultStore(redis_server.url, max_entry_bytes=10)
    await store.put("small", b"0123456789")
    await store.put("large", b"0123456789!")
    assert await store.get("small") == b"0123456789"
    assert await store.get("large") is None
    await store.close()


async def test_redis_down_is_logged_once_backed_off_and_reconnected(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = RedisResultStore(redis_server.url, clock=clock)
    await store.put("k", b"v")
    redis_server.kill()
    caplog.set_level(logging.WARNING, logger="pointillist.result_cache")

    assert await store.get("k") is None  # the failure: a miss, not an error
    assert not store.available
    for _ in range(3):  # within the backoff: answered without touching the network
        assert await store.get("k") is None
        await store.put("k", b"v")
    clock.now += BACKOFF_S[0] + 0.1
    assert await store.get("k") is None  # tried again, still down: backs off longer
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1

    redis_server.start()  # the same port, empty (no persistence)
    clock.now += BACKOFF_S[-1] + 0.1
    await store.put("k", b"again")
    assert store.available
    assert await store.get("k") == b"again"
    assert any("is back" in r.getMessage() for r in caplog.records)
    await store.close()


async def test_a_redis_that_never_answers_is_a_miss_not_an_error() -> None:
    store = RedisResultStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert await store.get("k") is None
    await store.put("k", b"v")
    await store.close()
