"""A pointillist server for the demo in a process of its own, for the load benchmarks.

In the benchmark's own process (``ServerThread``) the server's asyncio loop would share one GIL
with the load generator's client threads; Ray Serve's proxy is a process of its own, so the
pointillist side runs apart too. The child prints ``ADDRESS host:port`` once its replicas are
warm and stops the server when its standard input closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

from engine.config import demo_model_config
from scheduler.fleet import FleetSettings
from server.background import ServerThread
from server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[1]
READY_PREFIX = "ADDRESS "
READY_TIMEOUT_S = 600.0
MAX_BATCH_SIZE = 8


class DemoServerProcess:
    """``python -m bench.demo_server_process`` as a child; ``address`` once it is ready."""

    def __init__(
        self, replicas: int, batching: bool, queue_capacity: int, unlimited: bool = False
    ) -> None:
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
                *(["--unlimited"] if unlimited else []),
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


def start_server(
    replicas: int, batching: bool, queue_capacity: int, unlimited: bool = False
) -> ServerThread:
    """A pointillist server on 127.0.0.1:0 serving the demo with ``replicas`` warm CPU replicas."""
    config = dataclasses.replace(
        demo_model_config(), device="cpu", min_replicas=replicas, max_replicas=replicas
    )
    scheduler = FleetSettings(
        max_batch_size=MAX_BATCH_SIZE if batching else 1,
        cpu_max_replicas=replicas,
        queue_capacity=queue_capacity,
        # The load benchmarks come from one address: per-caller limits would refuse them.
        max_queued_per_caller=0 if unlimited else FleetSettings.max_queued_per_caller,
    )
    settings = ServerSettings(
        address="127.0.0.1:0",
        models=(config,),
        inventory="cpu",
        scheduler=scheduler,
        result_cache="off",  # every cell repeats the same seeded requests: none may be a hit
        max_streams_per_caller=0 if unlimited else ServerSettings.max_streams_per_caller,
        max_watchers_per_job=0 if unlimited else ServerSettings.max_watchers_per_job,
    )
    server = ServerThread(settings).start()
    try:
        fleet = server.scheduler
        ready = fleet.wait_until(lambda: len(fleet.replicas("demo")) >= replicas, 300)
        server.call(ready, 310)
    except BaseException:
        server.stop()
        raise
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, required=True)
    parser.add_argument("--queue-capacity", type=int, default=64)
    parser.add_argument("--batching", action="store_true")
    parser.add_argument("--unlimited", action="store_true", help="no per-caller limits")
    args = parser.parse_args()
    server = start_server(args.replicas, args.batching, args.queue_capacity, args.unlimited)
    try:
        print(READY_PREFIX + server.address, flush=True)
        sys.stdin.read()  # until the benchmark closes our standard input
    finally:
        server.stop()


if __name__ == "__main__":
    main()
