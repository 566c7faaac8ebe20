"""A pointillist server for the demo in a process of its own, for the load benchmarks.

In the benchmark's own process (``ServerThread``) the server's asyncio loop would share one GIL
with the load generator's client threads; Ray Serve's proxy is a process of its own, so the
pointillist side runs apart too. The child prints ``ADDRESS host:port`` once its replicas are
warm and stops the server when its standard input closes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_PREFIX = "ADDRESS "
READY_TIMEOUT_S = 600.0


class DemoServerProcess:
    """``python -m bench.demo_server_process`` as a child; ``address`` once it is ready."""

    def __init__(self, replicas: int, batching: bool, queue_capacity: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.demo_server_process",
                "--replicas",
                str(replicas),
                "--queue-capacity",
                str(queue_capacity),
                *(["--batching"] if batching else []),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        found: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith(READY_PREFIX):
                    found.append(line[len(READY_PREFIX) :].strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(READY_TIMEOUT_S)
        if not found:
            self.stop()
            raise RuntimeError("the pointillist server process did not become ready")
        self.address = found[0]

    def stop(self) -> None:
        """Closes standard input (the server drains and stops its workers), then waits."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, required=True)
    parser.add_argument("--queue-capacity", type=int, default=64)
    parser.add_argument("--batching", action="store_true")
    args = parser.parse_args()
    from bench.throughput import start_server

    server = start_server(args.replicas, args.batching, args.queue_capacity)
    try:
        print(READY_PREFIX + server.address, flush=True)
        sys.stdin.read()  # until the benchmark closes our standard input
    finally:
        server.stop()


if __name__ == "__main__":
    main()
