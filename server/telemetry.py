"""The server's telemetry, chosen by the standard OTEL_* variables and ``metrics_port``.

- Traces: ``OTEL_TRACES_EXPORTER`` = ``otlp``, ``console`` or ``none`` (a comma list works);
  unset, spans go over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its ``_TRACES_``
  form) is set. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``_TRACES_PROTOCOL``) = ``grpc`` (the
  default) or ``http/protobuf``; the exporters read their other OTEL_EXPORTER_OTLP_* variables
  (headers, timeouts, certificates) themselves.
- Metrics: a Prometheus text endpoint on ``metrics_port`` (0: none), and
  ``OTEL_METRICS_EXPORTER`` = ``otlp`` / ``console`` / ``none`` with the same rule for OTLP.
- ``OTEL_SDK_DISABLED=true`` turns all of it off; ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES`` name the service (default ``pointillist``).

Without any of these no SDK provider exists: the RPC interceptor runs on OpenTelemetry's no-op
tracer (it still continues the caller's ``traceparent``, so log lines carry the caller's trace
id), jobs make no spans and workers record nothing, and metrics are no-op instruments.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import NoOpTracerProvider

from scheduler.status import SchedulerStatus
from server.job_telemetry import JobTelemetry
from server.metrics import ServerMetrics
from server.rpc_telemetry import RpcTelemetry

log = logging.getLogger("pointillist.telemetry")

DEFAULT_SERVICE_NAME = "pointillist"
# A denoising span holds one event a step; OpenTelemetry's default limit (128) is below what
# a model may allow. OTEL_SPAN_EVENT_COUNT_LIMIT still wins when set.
MAX_SPAN_EVENTS = 1024


class TelemetryConfigError(ValueError):
    """An OTEL_* variable names something this server cannot export to."""


@dataclass
class Telemetry:
    """Providers, instruments and the pieces that use them; ``shutdown`` flushes exports."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics: ServerMetrics = field(init=False)
    jobs: JobTelemetry = field(init=False)
    _metrics_server: Any = field(init=False, default=None)
    _registry: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.meter_provider)
        self.jobs = JobTelemetry(self.tracer_provider, self.metrics)

    @classmethod
    def from_environment(
        cls,
        metrics_port: int = 0,
        metrics_host: str = "127.0.0.1",
        environ: Mapping[str, str] = os.environ,
    ) -> Telemetry:
        """What the OTEL_* variables and ``metrics_port`` ask for (see the module docstring)."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        resource = _resource()
        tracer_provider = None
        exporters = [_span_exporter(name, environ) for name in _exporters("TRACES", environ)]
        if exporters:
            tracer_provider = TracerProvider(resource=resource, span_limits=_span_limits(environ))
            for exporter in exporters:
                tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        readers = [_metric_reader(name, environ) for name in _exporters("METRICS", environ)]
        registry = None
        if metrics_port:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry(auto_describe=True)
            readers.append(PrometheusMetricReader(scope_info_enabled=False, registry=registry))
        meter_provider = (
            MeterProvider(resource=resource, metric_readers=readers) if readers else None
        )
        telemetry = cls(tracer_provider, meter_provider, metrics_port, metrics_host)
        telemetry._registry = registry
        return telemetry

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The RPC span (continuing the caller's ``traceparent``), then the RPC's outcome."""
        provider = self.tracer_provider or NoOpTracerProvider()
        return [aio_server_interceptor(tracer_provider=provider), RpcTelemetry(self.metrics)]

    def start(self, status: Callable[[], SchedulerStatus], loop: asyncio.AbstractEventLoop) -> None:
        """Observe the scheduler's state and open the Prometheus endpoint, if asked."""
        if self.meter_provider is not None:
            self.metrics.observe_scheduler(status, loop)
        if self.metrics_port and self._registry is not None:
            from prometheus_client import start_http_server

            self._metrics_server, _ = start_http_server(
                self.metrics_port, addr=self.metrics_host, registry=self._registry
            )
            log.info("metrics on http://%s:%d/metrics", self.metrics_host, self.metrics_port)

    def shutdown(self) -> None:
        """Close the metrics endpoint and flush what is left to export."""
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def metrics_host(address: str) -> str:
    """The host part of a gRPC bind address: the metrics endpoint listens where the API does."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]") or "0.0.0.0"


def _exporters(signal: str, environ: Mapping[str, str]) -> list[str]:
    names = environ.get(f"OTEL_{signal}_EXPORTER")
    if names is None:
        endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    chosen = [name.strip().lower() for name in names.split(",") if name.strip()]
    return [name for name in chosen if name != "none"]


def _protocol(signal: str, environ: Mapping[str, str]) -> str:
    protocol = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol not in ("grpc", "http/protobuf"):
        raise TelemetryConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got {protocol!r}"
        )
    return protocol


def _span_exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise TelemetryConfigError(
            f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none"
        )
    if _protocol("TRACES", environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_reader(name: str, environ: Mapping[str, str]) -> MetricReader:
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name != "otlp":
        raise TelemetryConfigError(
            f"OTEL_METRICS_EXPORTER: {name!r} is not one of otlp, console, none "
            "(Prometheus is served with --metrics-port)"
        )
    if _protocol("METRICS", environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return PeriodicExportingMetricReader(HttpMetricExporter())


def _resource() -> Resource:
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _span_limits(environ: Mapping[str, str]) -> SpanLimits:
    if environ.get("OTEL_SPAN_EVENT_COUNT_LIMIT"):
        return SpanLimits()
    return SpanLimits(max_events=MAX_SPAN_EVENTS)
