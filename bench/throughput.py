"""Throughput and latency under load on the demo model: images per second, P50 and P99, at
several concurrency levels, with batching off and on (and optionally several replicas), all in
one run so the ratios are measured side by side.

    python -m bench.throughput [--concurrency 1 4 8] [--requests 24] [--replicas 1] [--steps 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench import record
from engine.config import demo_model_config
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.fleet import FleetSettings
from server.background import ServerThread
from server.settings import ServerSettings


def load(address: str, concurrency: int, requests: int, steps: int, size: int) -> dict[str, Any]:
    """``requests`` streams from ``concurrency`` client threads; latency per request."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    next_index = iter(range(requests))

    def client() -> None:
        channel = ServerThread.channel_to(address)
        stub = pb_grpc.GenerationServiceStub(channel)
        with channel:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                params = pb.GenerationParameters(
                    prompt=f"request {index}", width=size, height=size, steps=steps, seed=index
                )
                started = time.perf_counter()
                try:
                    list(stub.StreamGenerate(pb.StreamGenerateRequest(parameters=params)))
                    status = "OK"
                except grpc.RpcError as error:  # a load test counts every outcome
                    status = error.code().name
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "images_per_s": statuses.get("OK", 0) / elapsed,
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "statuses": statuses,
        "latencies_s": latencies,
    }


def wait_for_replicas(server: ServerThread, count: int) -> None:
    scheduler = server.scheduler
    ready = scheduler.wait_until(lambda: len(scheduler.replicas("demo")) >= count, 300)
    server.call(ready, 310)


def run(
    concurrencies: list[int], requests: int, replicas: int, steps: int, size: int, out: Path
) -> dict[str, Any]:
    config = dataclasses.replace(
        demo_model_config(), device="cpu", min_replicas=replicas, max_replicas=replicas
    )
    results: dict[str, Any] = {}
    for batching in (False, True):
        scheduler = FleetSettings(
            max_batch_size=8 if batching else 1,
            cpu_max_replicas=replicas,
            queue_capacity=max(64, 2 * max(concurrencies)),
            worker_env={"POINTILLIST_CPU_THREADS": str(max(1, 2 // replicas))},
        )
        settings = ServerSettings(
            address="127.0.0.1:0", models=(config,), inventory="cpu", scheduler=scheduler
        )
        server = ServerThread(settings).start()
        try:
            wait_for_replicas(server, replicas)
            load(server.address, 1, 2, steps, size)  # warm the path; not counted
            for concurrency in concurrencies:
                key = f"batching={'on' if batching else 'off'} concurrency={concurrency}"
                results[key] = load(server.address, concurrency, requests, steps, size)
        finally:
            server.stop()
    rows = [("concurrency", "off img/s", "on img/s", "on/off", "off P50/P99 s", "on P50/P99 s")]
    for concurrency in concurrencies:
        off = results[f"batching=off concurrency={concurrency}"]
        on = results[f"batching=on concurrency={concurrency}"]
        rows.append(
            (
                str(concurrency),
                f"{off['images_per_s']:.2f}",
                f"{on['images_per_s']:.2f}",
                f"{on['images_per_s'] / off['images_per_s']:.2f}",
                f"{off['p50_s']:.2f}/{off['p99_s']:.2f}",
                f"{on['p50_s']:.2f}/{on['p99_s']:.2f}",
            )
        )
    print(f"demo {size}x{size}, {steps} steps, {replicas} replica(s), {requests} requests per cell")
    print(record.table(rows))
    settings_record = {
        "concurrency": concurrencies,
        "requests": requests,
        "replicas": replicas,
        "steps": steps,
        "size": size,
    }
    print(f"record: {record.write(f'throughput_r{replicas}', settings_record, results, out)}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.concurrency, args.requests, args.replicas, args.steps, args.size, args.out)


if __name__ == "__main__":
    main()
