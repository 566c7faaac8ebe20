"""A minimal OTLP/gRPC receiver on 127.0.0.1: the collector's TraceService and MetricsService
(from ``opentelemetry-proto``), keeping what arrives. Where the tracing benchmark exports to,
and what the observability tests read spans and metrics back from over the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


class OtlpReceiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """Start with ``start()``; ``endpoint`` is what OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._spans: list[trace_pb2.Span] = []
        self._service_names: set[str] = set()
        self._metric_names: set[str] = set()
        self._server: grpc.Server | None = None
        self.port = 0

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self._take_spans(request)
            return trace_service_pb2.ExportTraceServiceResponse()
        self._take_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def spans(self) -> list[trace_pb2.Span]:
        with self._changed:
            return list(self._spans)

    def service_names(self) -> set[str]:
        with self._changed:
            return set(self._service_names)

    def metric_names(self) -> set[str]:
        with self._changed:
            return set(self._metric_names)

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until ``condition()`` holds after some export arrived, or ``timeout``."""
        with self._changed:
            return self._changed.wait_for(condition, timeout)

    def _take_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._changed:
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self._service_names.add(attribute.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    self._spans.extend(scope_spans.spans)
            self._changed.notify_all()

    def _take_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._changed:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    self._metric_names.update(metric.name for metric in scope_metrics.metrics)
            self._changed.notify_all()
