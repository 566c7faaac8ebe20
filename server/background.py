"""A pointillist server on a background thread, for tests, benchmarks and embedding.

It runs on its own event loop, so the caller can use blocking clients and still inspect the
scheduler (through ``call``) without sharing a loop with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

from scheduler.job import Job
from server.app import RunningServer, create_server
from server.settings import ServerSettings
from server.telemetry import Telemetry

T = TypeVar("T")

STARTUP_TIMEOUT_S = 240.0


class ServerThread:
    """Starts ``create_server(settings)`` on a private loop; ``stop()`` drains it.

    ``telemetry``: the server's (default: what the OTEL_* variables ask for, at start).
    """

    def __init__(self, settings: ServerSettings, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="server", daemon=True)
        self.running: RunningServer | None = None

    def start(self, wait_ready: bool = True) -> ServerThread:
        self._thread.start()
        self.running = self.call(create_server(self.settings, telemetry=self.telemetry))
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        assert self.running is not None
        ready = self.running.ready
        self.call(asyncio.wait_for(asyncio.shield(ready), STARTUP_TIMEOUT_S), STARTUP_TIMEOUT_S)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def address(self) -> str:
        assert self.running is not None
        return f"127.0.0.1:{self.running.port}"

    @property
    def scheduler(self) -> Any:
        assert self.running is not None
        return self.running.scheduler

    def channel(self) -> grpc.Channel:
        return self.channel_to(self.address)

    @staticmethod
    def channel_to(address: str) -> grpc.Channel:
        """A plain channel that accepts large results (several PNGs in one message)."""
        return grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )

    def wait_job_finished(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job has ended, by watching its events on the server's loop.

        Jobs are looked up where the RPCs look them up: the result cache's own jobs (a cache hit,
        a single-flight follower) are there, not in the fleet.
        """
        assert self.running is not None
        front = self.running.results or self.running.scheduler

        async def finished() -> Job:
            job: Job = front.get_job(job_id)
            try:
                async for _ in job.events():
                    pass
            except Exception:
                pass  # a failed or cancelled job ends its events with its error
            return job

        return self.call(asyncio.wait_for(finished(), timeout), timeout + 5)

    def active_jobs(self) -> list[Job]:
        async def active() -> list[Job]:
            jobs: list[Job] = self.scheduler.active_jobs()
            return jobs

        return self.call(active())

    def stop(self, grace_s: float = 10.0) -> None:
        if self.running is not None:
            self.call(self.running.drain(grace_s), grace_s + 60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
