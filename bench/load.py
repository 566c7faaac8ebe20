"""Load: many concurrent streams against the demo model for a fixed time, on loopback.

    .venv/bin/python -m bench.load --streams 32 --seconds 30        # the size knob: --streams

Each stream is its own connection (so its own caller) and sends StreamGenerate requests back to
back until the time or the request count runs out. The queue is kept small on purpose, so some
requests are refused with RESOURCE_EXHAUSTED (a stream then waits the RetryInfo delay, capped).
Prints throughput, P50/P99 latency of the completed requests, the count of each status, and the
resident memory of the server process and of its worker before and after. The server runs
in this process (ServerThread), so "server RSS" includes the load clients' side.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench import record
from engine.config import demo_model_config
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.fleet import FleetSettings
from server.background import ServerThread
from server.settings import ServerSettings

MAX_BACKOFF_S = 0.5
CALL_TIMEOUT_S = 120.0


@dataclasses.dataclass
class LoadReport:
    seconds: float
    statuses: Counter[str]
    latencies_s: list[float]

    @property
    def completed(self) -> int:
        return self.statuses.get("OK", 0)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_load(
    target: str, streams: int, seconds: float, max_requests: int, size: int = 64, steps: int = 2
) -> LoadReport:
    """``streams`` concurrent callers for ``seconds`` (at most ``max_requests`` in all)."""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    started = time.monotonic()
    end = started + seconds
    sent = 0
    request = pb.StreamGenerateRequest(
        parameters=pb.GenerationParameters(prompt="load", width=size, height=size, steps=steps)
    )

    async def caller(index: int) -> None:
        nonlocal sent
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = pb_grpc.GenerationServiceStub(channel)
            while time.monotonic() < end and sent < max_requests:
                sent += 1
                began = time.monotonic()
                # New requests stop at ``end``; one already sent may take up to CALL_TIMEOUT_S.
                call = stub.StreamGenerate(request, timeout=CALL_TIMEOUT_S)
                try:
                    async for _ in call:
                        pass
                    statuses["OK"] += 1
                    latencies.append(time.monotonic() - began)
                except grpc.aio.AioRpcError as err:
                    statuses[err.code().name] += 1
                    await asyncio.sleep(_retry_delay(err))

    await asyncio.gather(*(caller(i) for i in range(streams)))
    return LoadReport(time.monotonic() - started, statuses, latencies)


def _retry_delay(err: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return min(MAX_BACKOFF_S, info.retry_delay.ToNanoseconds() / 1e9)
    return MAX_BACKOFF_S


def memory(server: ServerThread) -> dict[str, int]:
    (replica,) = server.scheduler.replicas("demo")
    return {
        "server_rss": psutil.Process().memory_info().rss,
        "worker_rss": psutil.Process(replica.pid).memory_info().rss,
    }


def run(
    streams: int, seconds: float, max_requests: int, queue_capacity: int, out: Path | None
) -> dict[str, Any]:
    config = dataclasses.replace(demo_model_config(), device="cpu")
    settings = ServerSettings(
        address="127.0.0.1:0",
        models=(config,),
        inventory="cpu",
        scheduler=FleetSettings(queue_capacity=queue_capacity),
        result_cache="off",  # load means work on the replica, never a cached answer
    )
    server = ServerThread(settings).start()
    try:
        asyncio.run(run_load(server.address, 2, 2.0, 8))  # warm the path; not counted
        before = memory(server)
        report = asyncio.run(run_load(server.address, streams, seconds, max_requests))
        after = memory(server)
    finally:
        server.stop()
    results = {
        "seconds": report.seconds,
        "statuses": dict(report.statuses),
        "completed_per_s": report.completed / report.seconds,
        "p50_s": report.percentile(0.5),
        "p99_s": report.percentile(0.99),
        "median_s": statistics.median(report.latencies_s) if report.latencies_s else None,
        "memory_before": before,
        "memory_after": after,
    }
    rows = [
        ("streams", "seconds", "completed/s", "P50 s", "P99 s", "statuses"),
        (
            str(streams),
            f"{report.seconds:.1f}",
            f"{results['completed_per_s']:.2f}",
            f"{results['p50_s']:.3f}",
            f"{results['p99_s']:.3f}",
            " ".join(f"{name}={count}" for name, count in sorted(report.statuses.items())),
        ),
    ]
    print(f"demo 64x64, 2 steps, queue capacity {queue_capacity}, one replica")
    print(record.table(rows))
    for name in ("server_rss", "worker_rss"):
        ratio = after[name] / before[name]
        print(f"{name}: {before[name] / 2**20:.0f} -> {after[name] / 2**20:.0f} MiB ({ratio:.3f}x)")
    if out is not None:
        settings_record = {
            "streams": streams,
            "seconds": seconds,
            "max_requests": max_requests,
            "queue_capacity": queue_capacity,
        }
        print(f"record: {record.write('load', settings_record, results, out)}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32, help="concurrent callers (size knob)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--queue-capacity", type=int, default=8)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.streams, args.seconds, args.max_requests, args.queue_capacity, args.out)


if __name__ == "__main__":
    main()
