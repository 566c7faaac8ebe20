"""What the server records of each job: its spans, its metrics and its closing log line.

Spans (when a tracer provider is configured), under the span current at submission (the RPC's):

    job                      pointillist.job.id, model, width, height, steps, images, seed, ...
    ├── queue_wait           pointillist.queue.position at entry, estimated wait
    └── dispatch             replica id, device id and kind, batch size, attempt (one per run)
        ├── text_encoding    recorded in the worker process (engine.worker_tracing), re-created
        ├── denoising        here with their own start and end times; one "step" event a step
        ├── vae_decode       with its duration; precision per component, replica memory
        └── image_encoding

The dispatch span's W3C context goes to the worker with the job (``Job.trace_context``); the
worker records its phases only for a job that carries one, and returns them with the job's
outcome. A job that fails or is cancelled ends its spans with an error status and the exception.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.job import GenerationOutput, StepProgress
from engine.worker_tracing import SpanRecord
from scheduler.job import Job, JobEvent, JobState, Queued, Started
from server import errors
from server.logs import current_rpc
from server.metrics import ServerMetrics

log = logging.getLogger("pointillist.jobs")
_PROPAGATOR = TraceContextTextMapPropagator()


class JobTelemetry:
    """Creates the per-job observer and the validation span."""

    def __init__(self, tracer_provider: TracerProvider | None, metrics: ServerMetrics) -> None:
        self._tracer = tracer_provider.get_tracer("pointillist.server") if tracer_provider else None
        self.metrics = metrics

    @contextlib.contextmanager
    def validating(self) -> Iterator[None]:
        """The ``validate`` span around checking a request (its error, if any, recorded)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span("validate"):
            yield

    def attach(self, job: Job) -> None:
        """Observe a just-submitted job, under the current span (the RPC's)."""
        observer = _JobObserver(self._tracer, self.metrics, job, otel_context.get_current())
        for event in job.history:  # what happened inside submit (the Queued event)
            observer.on_event(job, event)
        job.observe(observer)
        rpc = current_rpc.get()
        if rpc is not None:
            rpc.job_id = job.id


class _JobObserver:
    """One job's spans, metrics and closing log line (a ``scheduler.job.JobObserver``)."""

    def __init__(
        self,
        tracer: Tracer | None,
        metrics: ServerMetrics,
        job: Job,
        parent: otel_context.Context,
    ) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self._model = job.spec.model
        self._device = ""
        self._replica = ""
        self._last_step_elapsed_s = 0.0
        self._images = 0
        self._job_span: Span | None = None
        self._queue_span: Span | None = None
        self._dispatch_span: Span | None = None
        self._attempt = 0
        # Logs name the trace even when nothing is recorded: the caller's, when it sent one.
        self._parent_span_context = trace.get_current_span(parent).get_span_context()
        if tracer is not None:
            start = _wall_ns(job.submitted_at)
            spec = job.spec
            self._job_span = tracer.start_span(
                "job",
                context=parent,
                start_time=start,
                attributes={
                    "pointillist.job.id": job.id,
                    "pointillist.model": spec.model,
                    "pointillist.width": spec.width,
                    "pointillist.height": spec.height,
                    "pointillist.steps": spec.steps,
                    "pointillist.images": spec.num_images,
                    "pointillist.seed": str(spec.seed),  # 64-bit unsigned: beyond an int64
                    "pointillist.guidance_scale": spec.guidance_scale,
                    "pointillist.priority": job.priority,
                },
            )
            self._queue_span = tracer.start_span(
                "queue_wait", context=self._in(self._job_span), start_time=start
            )

    # JobObserver

    def on_event(self, job: Job, event: JobEvent) -> None:
        if isinstance(event, StepProgress):
            duration = event.elapsed_s - self._last_step_elapsed_s
            self._last_step_elapsed_s = event.elapsed_s
            self._metrics.step_duration.record(
                duration, {"model": self._model, "device": self._device}
            )
        elif isinstance(event, Queued):
            if self._queue_span is not None:
                self._queue_span.set_attribute("pointillist.queue.position", event.position)
                self._queue_span.set_attribute(
                    "pointillist.queue.estimated_wait_s", event.estimated_wait_s
                )
        elif isinstance(event, Started):
            self._started(job, event)
        elif isinstance(event, GenerationOutput):
            self._images = len(event.images)

    def on_worker_spans(self, job: Job, spans: tuple[SpanRecord, ...]) -> None:
        if self._tracer is None or self._dispatch_span is None:
            return
        parent = self._in(self._dispatch_span)
        for record in spans:
            span = self._tracer.start_span(
                record.name,
                context=parent,
                start_time=record.start_ns,
                attributes=record.attributes,
            )
            for event in record.events:
                span.add_event(event.name, event.attributes, timestamp=event.time_ns)
            if record.error is not None:
                kind, _, message = record.error.partition(": ")
                span.add_event(
                    "exception",
                    {"exception.type": kind, "exception.message": message},
                    timestamp=record.end_ns,
                )
                span.set_status(Status(StatusCode.ERROR, record.error))
            span.end(end_time=record.end_ns)

    def on_finished(self, job: Job) -> None:
        outcome = job.state.value
        self._metrics.jobs.add(1, {"model": self._model, "outcome": outcome})
        if self._images:
            self._metrics.images.add(self._images, {"model": self._model})
        now = time.time_ns()
        error = job.error
        for span in (self._queue_span, self._dispatch_span, self._job_span):
            if span is None or not span.is_recording():
                continue
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            if span is self._job_span:
                span.set_attribute("pointillist.job.outcome", outcome)
                if error is not None:
                    span.record_exception(error)
            span.end(end_time=now)
        self._log_finished(job)

    # Parts

    def _started(self, job: Job, event: Started) -> None:
        self._device = event.device.id
        self._replica = event.replica_id
        self._last_step_elapsed_s = 0.0
        self._attempt += 1
        self._metrics.queue_wait.record(
            (job.started_at or time.monotonic()) - job.submitted_at, {"model": self._model}
        )
        if self._tracer is None or self._job_span is None:
            return
        now = time.time_ns()
        if self._queue_span is not None:
            self._queue_span.end(end_time=now)
            self._queue_span = None
        if self._dispatch_span is not None:  # the last run was interrupted: the job is retried
            self._dispatch_span.set_status(Status(StatusCode.ERROR, "run interrupted; retried"))
            self._dispatch_span.end(end_time=now)
        self._dispatch_span = self._tracer.start_span(
            "dispatch",
            context=self._in(self._job_span),
            start_time=now,
            attributes={
                "pointillist.replica.id": event.replica_id,
                "pointillist.device.id": event.device.id,
                "pointillist.device.kind": event.device.kind,
                "pointillist.device.name": event.device.name,
                "pointillist.batch_size": event.batch_size,
                "pointillist.attempt": self._attempt,
            },
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=self._in(self._dispatch_span))
        job.trace_context = carrier

    def _log_finished(self, job: Job) -> None:
        fields: dict[str, Any] = {
            "outcome": job.state.value,
            "model": self._model,
            "replica": self._replica,
            "queue_wait_ms": _ms((job.started_at or job.finished_at or 0.0) - job.submitted_at),
            "total_ms": _ms((job.finished_at or time.monotonic()) - job.submitted_at),
        }
        result = job.result
        if result is not None:
            timings = result.timings
            fields.update(
                text_encoding_ms=_ms(timings.text_encoding_s),
                denoising_ms=_ms(timings.denoising_s),
                decoding_ms=_ms(timings.decoding_s),
                image_encoding_ms=_ms(timings.image_encoding_s),
                images=len(result.images),
            )
        if job.error is not None:
            fields["code"] = errors.status_for(job.error).code.name
            fields["error"] = str(job.error)
        ids: dict[str, Any] = {"job_id": job.id, "fields": fields}
        span_context = (
            self._job_span.get_span_context() if self._job_span else self._parent_span_context
        )
        if span_context.is_valid:
            ids["trace_id"] = format(span_context.trace_id, "032x")
            ids["span_id"] = format(span_context.span_id, "016x")
        level = logging.INFO if job.state is not JobState.FAILED else logging.WARNING
        log.log(level, "job finished", extra=ids)

    @staticmethod
    def _in(span: Span) -> otel_context.Context:
        return trace.set_span_in_context(span)


def _wall_ns(monotonic_s: float) -> int:
    """A ``time.monotonic()`` instant as wall-clock nanoseconds (what spans carry)."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)
