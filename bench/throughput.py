"""Throughput and latency under load on the demo model: images per second, P50 and P99, at
several concurrency levels, for 1 and 2 CPU replicas with batching off and on, all in one run so
the ratios are measured side by side.

    python -m bench.throughput [--concurrency 1 4 8 16] [--replicas 1 2] [--requests 32]

On a CPU the fleet gives each replica ``cores // cpu_max_replicas`` torch threads, so 2 replicas
on this 2-core machine share the cores rather than add any: expect no gain from the second one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench import record
from bench.demo_server_process import MAX_BATCH_SIZE, DemoServerProcess
from bench.load_generator import Call, run_load
from pointillist.balancing import balancing_options
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from server.background import ServerThread


def stream_generate_caller(
    address: str,
    steps: int,
    size: int,
    balanced: bool = False,
    label: str = "request",
) -> Callable[[], tuple[Call, Callable[[], None]]]:
    """A caller factory for the load generator: StreamGenerate to the end, on its own channel
    (``balanced``: round_robin over every address ``address`` resolves to, as the client does).
    """

    def make() -> tuple[Call, Callable[[], None]]:
        channel = (
            grpc.insecure_channel(
                address,
                options=[*balancing_options(), ("grpc.max_receive_message_length", 64 << 20)],
            )
            if balanced
            else ServerThread.channel_to(address)
        )
        stub = pb_grpc.GenerationServiceStub(channel)

        def call(index: int) -> str:
            params = pb.GenerationParameters(
                prompt=f"{label} {index}", width=size, height=size, steps=steps, seed=index
            )
            try:
                events = list(stub.StreamGenerate(pb.StreamGenerateRequest(parameters=params)))
            except grpc.RpcError as error:
                return str(error.code().name)
            return "OK" if events and events[-1].HasField("result") else "NO_RESULT"

        return call, channel.close

    return make


def configuration(replicas: int, batching: bool) -> str:
    return f"replicas={replicas} batching={'on' if batching else 'off'}"


def run(
    concurrencies: list[int],
    requests: int,
    replicas_list: list[int],
    steps: int,
    size: int,
    out: Path,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for replicas in replicas_list:
        for batching in (False, True):
            server = DemoServerProcess(replicas, batching, max(64, 2 * max(concurrencies)))
            try:
                make = stream_generate_caller(server.address, steps, size)
                run_load(make, 1, 2)  # warm the path; not counted
                results[configuration(replicas, batching)] = {
                    str(c): run_load(make, c, max(requests, c)) for c in concurrencies
                }
            finally:
                server.stop()
    print(f"demo {size}x{size}, {steps} steps, {requests} requests per cell (closed loop)")
    print(record.table(table_rows(results, concurrencies)))
    settings = {
        "concurrency": concurrencies,
        "requests": requests,
        "replicas": replicas_list,
        "steps": steps,
        "size": size,
        "max_batch_size": MAX_BATCH_SIZE,
    }
    print(f"record: {record.write('throughput', settings, results, out)}")
    return results


def table_rows(results: dict[str, Any], concurrencies: list[int]) -> list[tuple[str, ...]]:
    """One row per configuration and concurrency, with the ratio to the first configuration."""
    first = next(iter(results))
    rows: list[tuple[str, ...]] = [
        ("configuration", "concurrency", "img/s", f"img/s vs {first}", "P50 s", "P99 s", "errors")
    ]
    for name, cells in results.items():
        for concurrency in concurrencies:
            cell = cells[str(concurrency)]
            base = results[first][str(concurrency)]["images_per_s"]
            errors = sum(n for status, n in cell["statuses"].items() if status != "OK")
            rows.append(
                (
                    name,
                    str(concurrency),
                    f"{cell['images_per_s']:.2f}",
                    f"{cell['images_per_s'] / base:.2f}" if base else "n/a",
                    f"{cell['p50_s']:.2f}",
                    f"{cell['p99_s']:.2f}",
                    str(errors),
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--replicas", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.concurrency, args.requests, args.replicas, args.steps, args.size, args.out)


if __name__ == "__main__":
    main()
