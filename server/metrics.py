"""The server's OpenTelemetry metrics: the instruments, and the fleet's state read at collection.

Requests, latencies, queue waits, step durations and images are recorded as they happen (by
``server.rpc_telemetry`` and ``server.job_telemetry``). Queue depth, replicas and device memory
are observable gauges that read ``Scheduler.status()`` when a reader collects (a Prometheus
scrape, an OTLP export). Without a meter provider every instrument is OpenTelemetry's no-op.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation

from scheduler.status import SchedulerStatus

# Seconds. Requests and queue waits run from milliseconds (a status call) to minutes (a queued
# 1024-pixel batch); a step from a millisecond (the demo) to seconds (SD3.5 Large on a CPU).
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0
)  # fmt: skip
STEP_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip
STATUS_TIMEOUT_S = 2.0


class ServerMetrics:
    """Every instrument the server records into."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = (meter_provider or NoOpMeterProvider()).get_meter("pointillist.server")
        self._meter = meter
        self.rpc_requests = meter.create_counter(
            "pointillist.rpc.requests", unit="{request}", description="RPCs by method and status"
        )
        self.rpc_duration = meter.create_histogram(
            "pointillist.rpc.duration",
            unit="s",
            description="RPC latency, from the call's start to its status, by method and status",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.queue_wait = meter.create_histogram(
            "pointillist.job.queue_wait",
            unit="s",
            description="Time a job waited in its model's queue before a replica started it",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.step_duration = meter.create_histogram(
            "pointillist.step.duration",
            unit="s",
            description="Denoising step time each job saw, by model and device",
            explicit_bucket_boundaries_advisory=STEP_BUCKETS_S,
        )
        self.images = meter.create_counter(
            "pointillist.images.generated", unit="{image}", description="Images returned, by model"
        )
        self.jobs = meter.create_counter(
            "pointillist.jobs", unit="{job}", description="Jobs ended, by model and outcome"
        )

    def observe_scheduler(
        self, status: Callable[[], SchedulerStatus], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Gauges of queues, replicas and devices, read from ``status`` on ``loop`` (the
        scheduler is not thread-safe; readers collect on their own threads)."""
        reader = _StatusReader(status, loop)
        meter = self._meter
        meter.create_observable_gauge(
            "pointillist.queue.depth",
            [reader.callback(_queue_depth)],
            unit="{job}",
            description="Jobs waiting, by model",
        )
        meter.create_observable_gauge(
            "pointillist.replicas",
            [reader.callback(_replicas)],
            unit="{replica}",
            description="Replicas by model and state",
        )
        for name, value in (
            ("total", lambda d: d.total_bytes),
            ("used", lambda d: d.used_bytes),
            ("free", lambda d: d.free_bytes),
        ):
            meter.create_observable_gauge(
                f"pointillist.device.memory.{name}",
                [reader.callback(_per_device(value))],
                unit="By",
                description=f"Device memory {name} (NVML on a GPU, the host's RAM on the CPU)",
            )
        meter.create_observable_gauge(
            "pointillist.device.utilization",
            [reader.callback(_utilization)],
            unit="1",
            description="Device utilization, 0..1 (NVML; absent where unknown)",
        )


class _StatusReader:
    """``status()`` read on the scheduler's loop, for gauge callbacks on a reader's thread."""

    def __init__(
        self, status: Callable[[], SchedulerStatus], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._status = status
        self._loop = loop

    def read(self) -> SchedulerStatus | None:
        return self._read_on_loop()

    def _read_on_loop(self) -> SchedulerStatus | None:
        if self._loop.is_closed():
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # a collection on the loop itself (a final export)
            return self._status()

        async def read() -> SchedulerStatus:
            return self._status()

        try:
            return asyncio.run_coroutine_threadsafe(read(), self._loop).result(STATUS_TIMEOUT_S)
        except Exception:  # a stopped loop or a slow one: this collection goes without
            return None

    def callback(
        self, observe: Callable[[SchedulerStatus], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def collect(options: CallbackOptions) -> Iterable[Observation]:
            status = self.read()
            return list(observe(status)) if status is not None else []

        return collect


def _queue_depth(status: SchedulerStatus) -> Iterable[Observation]:
    for model in status.models:
        yield Observation(model.queued_jobs, {"model": model.model})


def _replicas(status: SchedulerStatus) -> Iterable[Observation]:
    counts = Counter((replica.model, replica.state) for replica in status.replicas)
    for queue in status.models:  # a model with no replica still shows, at zero
        counts.setdefault((queue.model, "ready"), 0)
    for (model, state), count in sorted(counts.items()):
        yield Observation(count, {"model": model, "state": state})


def _per_device(
    value: Callable[..., int],
) -> Callable[[SchedulerStatus], Iterable[Observation]]:
    def observe(status: SchedulerStatus) -> Iterable[Observation]:
        for device in status.devices:
            yield Observation(value(device), {"device": device.id, "device_name": device.name})

    return observe


def _utilization(status: SchedulerStatus) -> Iterable[Observation]:
    for device in status.devices:
        if device.utilization_percent is not None:
            yield Observation(
                device.utilization_percent / 100.0,
                {"device": device.id, "device_name": device.name},
            )
