"""A short load run against the shared demo server: only OK or RESOURCE_EXHAUSTED, and the
memory of the server and its worker back within a small margin."""

from __future__ import annotations

import asyncio

from bench.load import memory, run_load

MARGIN = {"server_rss": 64 << 20, "worker_rss": 64 << 20}


def test_a_short_load_run_sees_only_intended_statuses_and_no_memory_growth(demo_server):
    asyncio.run(run_load(demo_server.address, 2, 1.0, 4))  # warm the path
    before = memory(demo_server)

    report = asyncio.run(run_load(demo_server.address, streams=6, seconds=2.0, max_requests=40))

    after = memory(demo_server)
    assert report.completed > 0
    assert set(report.statuses) <= {"OK", "RESOURCE_EXHAUSTED"}, report.statuses
    for name, margin in MARGIN.items():
        assert after[name] - before[name] <= margin, (name, before[name], after[name])
