"""The result cache on a real redis-server, end to end; and a Redis killed in the middle of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bench.redis_process import RedisProcess
from pointillist import Client, Progress
from scheduler.result_key import KEY_PREFIX
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.server.test_result_cache import QUICK, SubmitCounter

TTL_S = 120.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def redis_cached_server(redis_server: RedisProcess) -> Iterator[ServerThread]:
    settings = demo_settings(result_cache=redis_server.url, result_cache_ttl_s=TTL_S)
    server = ServerThread(settings).start()
    yield server
    server.stop()


@pytest.fixture
def submits(redis_cached_server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> SubmitCounter:
    return SubmitCounter(redis_cached_server, monkeypatch)


def test_a_result_is_stored_in_redis_with_a_ttl_and_served_from_it(
    redis_cached_server: ServerThread, redis_server: RedisProcess, submits: SubmitCounter
) -> None:
    prompt = f"a fox {uuid.uuid4().hex[:8]}"
    with Client(redis_cached_server.address) as client:
        first = client.generate(prompt, seed=1, **QUICK)
        keys = redis.Redis(port=redis_server.port).keys(f"{KEY_PREFIX}*")
        second = client.generate(prompt, seed=1, **QUICK)

    assert submits.count == 1
    assert second.cached and second.images[0].data == first.images[0].data
    assert len(keys) >= 1
    ttls = [redis.Redis(port=redis_server.port).pttl(key) for key in keys]
    assert all(0 < ttl <= TTL_S * 1000 for ttl in ttls)


def test_redis_killed_mid_run_every_request_still_succeeds(
    redis_cached_server: ServerThread, redis_server: RedisProcess, submits: SubmitCounter
) -> None:
    prompt = f"a heron {uuid.uuid4().hex[:8]}"
    long: dict[str, Any] = {"width": 128, "height": 128, "steps": 12}
    try:
        with Client(redis_cached_server.address) as client:
            stream = client.stream(prompt, seed=2, **long)
            next(event for event in stream if isinstance(event, Progress))
            redis_server.kill()  # while the job runs: its result cannot be stored
            during = stream.result()
            again = client.generate(prompt, seed=2, **long)  # a lookup with Redis down
            other = client.generate(prompt, seed=3, **QUICK)
    finally:
        redis_server.start()  # back on the same port for the rest of the module

    assert len(during.images) == len(again.images) == len(other.images) == 1
    assert not again.cached  # nothing to hit: it ran again
    assert again.images[0].data == during.images[0].data
    assert submits.count == 3
    assert redis_cached_server.active_jobs() == []
