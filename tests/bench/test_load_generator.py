"""The closed-loop load generator shared by pointillist's and the Ray peer's benchmarks."""

from __future__ import annotations

import threading

import pytest

from bench.load_generator import percentile, run_load


def test_percentile_is_nearest_rank():
    samples = [float(v) for v in range(1, 101)]

    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 0.99) == 3.0


def test_every_request_is_sent_once_and_every_outcome_counted():
    seen: list[int] = []
    lock = threading.Lock()
    closed: list[int] = []

    def make():
        def call(index: int) -> str:
            with lock:
                seen.append(index)
            if index == 3:
                raise ConnectionError("boom")
            return "OK" if index % 2 == 0 else "UNAVAILABLE"

        return call, lambda: closed.append(1)

    result = run_load(make, concurrency=3, requests=10)

    assert sorted(seen) == list(range(10))
    assert result["statuses"] == {"OK": 5, "UNAVAILABLE": 4, "ConnectionError": 1}
    assert len(result["latencies_s"]) == 10
    assert result["images_per_s"] == pytest.approx(5 / result["wall_s"])
    assert "boom" in result["first_failure"]
    assert len(closed) == 3


def test_rejects_no_callers():
    with pytest.raises(ValueError):
        run_load(lambda: (lambda i: "OK", lambda: None), concurrency=0, requests=1)
