"""Images per second through one client balancing over 1, 2 and 3 `pointillist serve` processes
on loopback, sharing one redis-server as their job store, all in one run so the ratios are side
by side.

    python -m bench servers [--servers 1 2 3] [--concurrency 6] [--requests 24]

Every server packs the same host: on a machine with few cores (2 here) more servers share the
same cores, so this shows what the shared job space and balancing cost, not scaling. Scaling
needs one server per GPU node (README, "Running many servers").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import record
from bench.load_generator import run_load
from bench.redis_process import RedisProcess
from bench.throughput import stream_generate_caller

READY_TIMEOUT_S = 600.0
SERVE = (sys.executable, "-m", "pointillist.cli", "serve")


class ServeProcess:
    """``pointillist serve`` on a free loopback port with ``config``; ``address`` once serving."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--address", "127.0.0.1:0", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        ports: queue.Queue[int] = queue.Queue()

        def read() -> None:  # drains the pipe for the server's whole life
            assert self.process.stderr is not None
            for line in self.process.stderr:
                if match := re.search(r"listening on .* \(port (\d+)\)", line):
                    ports.put(int(match.group(1)))
            ports.put(0)  # the process ended without listening

        threading.Thread(target=read, daemon=True).start()
        port = ports.get(timeout=READY_TIMEOUT_S)
        if port == 0:
            raise RuntimeError(f"pointillist serve exited ({self.process.wait()}) before listening")
        self.address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(self.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=READY_TIMEOUT_S
            )
            for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


@contextlib.contextmanager
def servers(count: int, config: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    try:
        for _ in range(count):
            started.append(ServeProcess(config))
        yield started
    finally:
        for server in started:
            server.stop()


def run(
    counts: list[int], concurrency: int, requests: int, steps: int, size: int, out: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    redis = RedisProcess().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "pointillist.toml"
            config.write_text(
                f'[server]\njob_store = "{redis.url}"\nresult_cache = "off"\ndrain_grace_s = 5\n'
            )
            for count in counts:
                with servers(count, config) as started:
                    target = "ipv4:" + ",".join(server.address for server in started)
                    label = uuid.uuid4().hex[:8]
                    # Prompts new to this phase: the warm-up's results are not reused.
                    caller = stream_generate_caller(target, steps, size, balanced=True, label=label)
                    run_load(caller, 1, count)  # warm every server's path; not counted
                    results[f"servers={count}"] = run_load(caller, concurrency, requests)
    finally:
        redis.kill()
    first = results[next(iter(results))]["images_per_s"]
    rows: list[tuple[str, ...]] = [("servers", "img/s", "vs first", "P50 s", "P99 s", "errors")]
    for name, cell in results.items():
        errors = sum(n for status, n in cell["statuses"].items() if status != "OK")
        rows.append(
            (
                name,
                f"{cell['images_per_s']:.2f}",
                f"{cell['images_per_s'] / first:.2f}" if first else "n/a",
                f"{cell['p50_s']:.2f}",
                f"{cell['p99_s']:.2f}",
                str(errors),
            )
        )
    print(
        f"demo {size}x{size}, {steps} steps, {requests} requests at concurrency {concurrency}, "
        f"one round_robin client, job store in redis; {os.cpu_count()} cores shared by all"
    )
    print(record.table(rows))
    settings = {"servers": counts, "concurrency": concurrency, "requests": requests}
    settings.update({"steps": steps, "size": size})
    print(f"record: {record.write('servers', settings, results, out)}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.servers, args.concurrency, args.requests, args.steps, args.size, args.out)


if __name__ == "__main__":
    main()
