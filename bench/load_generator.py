"""A closed-loop load generator: N client threads share a bounded list of requests.

Each thread takes the next request index, sends it through its own ``Call`` (one gRPC channel
per thread, as N independent callers would) and records the wall time and outcome. The same
generator drives pointillist and the Ray Serve peer, so their figures differ only by the server.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

# Sends request ``index`` to completion and returns its outcome ("OK" or a status name).
Call = Callable[[int], str]
# Makes one caller's Call and the function that closes it (its channel).
CallerFactory = Callable[[], tuple[Call, Callable[[], None]]]


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (P99 of 24 samples is the largest one)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def run_load(make_caller: CallerFactory, concurrency: int, requests: int) -> dict[str, Any]:
    """``requests`` calls from ``concurrency`` threads; images per second, P50, P99, outcomes."""
    if concurrency < 1 or requests < 1:
        raise ValueError("concurrency and requests must be at least 1")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    indexes = iter(range(requests))
    # Every caller connects before the clock starts, so connection set-up is not counted.
    callers = [make_caller() for _ in range(concurrency)]
    failures: list[BaseException] = []

    def client(call: Call) -> None:
        while True:
            with lock:
                index = next(indexes, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                status = call(index)
            except Exception as error:  # a load test counts every outcome, and keeps going
                status = type(error).__name__
                with lock:
                    failures.append(error)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(call,)) for call, _ in callers]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for _, close in callers:
        close()
    return {
        "concurrency": concurrency,
        "requests": requests,
        "wall_s": wall,
        "images_per_s": statuses.get("OK", 0) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": percentile(latencies, 0.99),
        "statuses": statuses,
        "latencies_s": latencies,
        "first_failure": repr(failures[0]) if failures else None,
    }
