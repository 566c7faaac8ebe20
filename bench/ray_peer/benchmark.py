"""pointillist against Ray Serve, side by side: the same demo pipeline, the same replica count,
the same closed-loop load generator over gRPC, in one run.

    python -m bench.ray_peer.benchmark [--replicas 2] [--concurrency 1 4 8 16] [--requests 32]

Ray Serve runs in its own venv (bench/ray_peer/venv.py makes it on first use under
out/bench/ray-venv); it serves bench/ray_peer/demo_service.proto, whose one streaming RPC sends
an event per step and the PNG last, like StreamGenerate. Ray's replicas take one request at a
time (one pipeline object is not thread-safe), so the fair comparison is pointillist with
batching off; pointillist with batching on is measured as well. The two servers run one after
the other, never at once, so neither takes the other's cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench import record
from bench.demo_server_process import DemoServerProcess
from bench.load_generator import Call, run_load
from bench.ray_peer import serve_app
from bench.ray_peer.stubs import compile_stubs, import_stubs
from bench.ray_peer.venv import DEFAULT_VENV, REPO, ensure_ray_venv
from bench.throughput import configuration, stream_generate_caller

READY_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ray_caller(
    address: str, stubs: Path, steps: int, size: int
) -> Callable[[], tuple[Call, Callable[[], None]]]:
    """A caller factory for the load generator: the peer's Generate stream to its end."""
    messages, services = import_stubs(stubs)

    def make() -> tuple[Call, Callable[[], None]]:
        channel = grpc.insecure_channel(address)
        stub = services.DemoServiceStub(channel)

        def call(index: int) -> str:
            request = messages.GenerateRequest(
                prompt=f"request {index}", width=size, height=size, steps=steps, seed=index
            )
            metadata = (("application", serve_app.APP_NAME),)
            try:
                events = list(stub.Generate(request, metadata=metadata, timeout=600))
            except grpc.RpcError as error:
                return str(error.code().name)
            return "OK" if events and events[-1].WhichOneof("event") == "image" else "NO_RESULT"

        return call, channel.close

    return make


class RayServe:
    """Ray Serve with the demo deployment, in a child process of the Ray venv's python."""

    def __init__(self, python: Path, replicas: int, stubs: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(python),
                "-m",
                "bench.ray_peer.serve_app",
                "--replicas",
                str(replicas),
                "--port",
                str(self.port),
                "--http-port",
                str(free_port()),
                "--stubs",
                str(stubs),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Ray's own processes are children of this one: one group, ended together.
            start_new_session=True,
        )
        self.output: list[str] = []

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if line.strip() == serve_app.READY:
                    ready.set()
            ready.set()  # the process ended (the caller checks whether it is still alive)

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("Ray Serve did not become ready:\n" + "".join(self.output[-40:]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Closes standard input (Serve and Ray shut down), then ends the group if still there."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=30)


def run(
    replicas: int,
    concurrencies: list[int],
    requests: int,
    steps: int,
    size: int,
    out: Path,
    venv: Path = DEFAULT_VENV,
) -> dict[str, Any]:
    python = ensure_ray_venv(venv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ray-peer-stubs-") as folder:
        stubs = compile_stubs(Path(folder))
        for batching in (False, True):
            server = DemoServerProcess(replicas, batching, max(64, 2 * max(concurrencies)))
            try:
                make = stream_generate_caller(server.address, steps, size)
                run_load(make, 1, 2)  # warm the path; not counted
                results[f"pointillist {configuration(replicas, batching)}"] = {
                    str(c): run_load(make, c, max(requests, c)) for c in concurrencies
                }
            finally:
                server.stop()
        ray = RayServe(python, replicas, stubs)
        try:
            ray.wait_ready()
            make = ray_caller(ray.address, stubs, steps, size)
            run_load(make, 1, 2)
            results[f"ray-serve replicas={replicas}"] = {
                str(c): run_load(make, c, max(requests, c)) for c in concurrencies
            }
        finally:
            ray.stop()
    print(f"demo {size}x{size}, {steps} steps, {replicas} replica(s), {requests} requests per cell")
    print(record.table(ratio_rows(results, replicas, concurrencies)))
    settings = {
        "replicas": replicas,
        "concurrency": concurrencies,
        "requests": requests,
        "steps": steps,
        "size": size,
        "ray": "ray[serve]==2.60.0, max_ongoing_requests=1",
    }
    print(f"record: {record.write(f'ray_peer_r{replicas}', settings, results, out)}")
    return results


def ratio_rows(
    results: dict[str, Any], replicas: int, concurrencies: list[int]
) -> list[tuple[str, ...]]:
    """pointillist / Ray per concurrency: throughput (higher is better), P50 and P99 (lower)."""
    ray = results[f"ray-serve replicas={replicas}"]
    rows: list[tuple[str, ...]] = [
        (
            "pointillist config",
            "concurrency",
            "img/s ours / ray",
            "P50 s ours / ray",
            "P99 s ours / ray",
            "img/s ratio",
            "P50 ratio",
            "P99 ratio",
        )
    ]
    for name, cells in results.items():
        if name.startswith("ray-serve"):
            continue
        for concurrency in concurrencies:
            ours, theirs = cells[str(concurrency)], ray[str(concurrency)]
            rows.append(
                (
                    name.removeprefix("pointillist "),
                    str(concurrency),
                    f"{ours['images_per_s']:.2f} / {theirs['images_per_s']:.2f}",
                    f"{ours['p50_s']:.2f} / {theirs['p50_s']:.2f}",
                    f"{ours['p99_s']:.2f} / {theirs['p99_s']:.2f}",
                    _ratio(ours["images_per_s"], theirs["images_per_s"]),
                    _ratio(ours["p50_s"], theirs["p50_s"]),
                    _ratio(ours["p99_s"], theirs["p99_s"]),
                )
            )
    return rows


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(
        args.replicas,
        args.concurrency,
        args.requests,
        args.steps,
        args.size,
        args.out,
        args.venv,
    )


if __name__ == "__main__":
    main()
