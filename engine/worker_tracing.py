"""What a worker records of a traced batch: plain span records, shipped back to the server.

The worker does not export spans itself. It times its phases (text encoding, denoising with one
event per step, VAE decoding, image encoding) as plain records, sends them to the scheduler with
each job's outcome (``engine.ipc.JobDone`` etc.), and the server re-creates them as real spans
under the job's dispatch span (``server.job_telemetry``). So one exporter, configured once in
the server process, carries the whole trace, the worker needs no OpenTelemetry and no exporter
settings, and a worker that crashes never leaves a half-flushed export queue behind.

A job is traced when its ``RunJob.trace_context`` (a W3C carrier: ``traceparent`` and maybe
``tracestate``) is non-empty; otherwise the recorder records nothing and costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

AttributeValue = str | int | float | bool


@dataclass(frozen=True)
class SpanEventRecord:
    """A point in time inside a span (one denoising step)."""

    name: str
    time_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """A finished phase of a job in the worker: wall-clock nanoseconds (``time.time_ns``, the
    same clock as the server's, since a worker runs on the server's host)."""

    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    events: tuple[SpanEventRecord, ...] = ()
    # "TypeName: message" of the exception that ended the phase, if one did.
    error: str | None = None


@dataclass
class _OpenSpan:
    name: str
    start_ns: int
    attributes: dict[str, AttributeValue]
    events: list[SpanEventRecord] = field(default_factory=list)


class BatchRecorder:
    """Records the phases of one batch, per member (a member's index in the batch).

    A phase may cover several members (the shared denoising loop): each of them gets its own
    copy, because each member belongs to its own caller's trace.
    """

    def __init__(self, traced: Sequence[bool]) -> None:
        self._traced = list(traced)
        self._records: list[list[SpanRecord]] = [[] for _ in traced]
        self._open: dict[int, dict[str, _OpenSpan]] = {i: {} for i in range(len(traced))}
        self.enabled = any(traced)

    @contextlib.contextmanager
    def phase(
        self, name: str, members: Sequence[int], **attributes: AttributeValue
    ) -> Iterator[None]:
        """Time the block as phase ``name`` of each traced member in ``members``."""
        traced = [m for m in members if self.enabled and self._traced[m]]
        if not traced:
            yield
            return
        start = time.time_ns()
        for member in traced:
            self._open[member][name] = _OpenSpan(name, start, dict(attributes))
        error: str | None = None
        try:
            yield
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            end = time.time_ns()
            for member in traced:
                self._close(member, name, end, error)

    def event(self, member: int, phase: str, name: str, **attributes: AttributeValue) -> None:
        """A point event inside member's open phase ``phase`` (ignored when not open)."""
        if not self.enabled or not self._traced[member]:
            return
        span = self._open[member].get(phase)
        if span is not None:
            span.events.append(SpanEventRecord(name, time.time_ns(), attributes))

    def annotate(self, member: int, phase: str, **attributes: AttributeValue) -> None:
        """Add attributes to member's open phase ``phase`` (ignored when not open)."""
        if not self.enabled or not self._traced[member]:
            return
        if (span := self._open[member].get(phase)) is not None:
            span.attributes.update(attributes)

    def records(self, member: int) -> tuple[SpanRecord, ...]:
        """Member's finished phases, in the order they ended."""
        return tuple(self._records[member])

    def _close(self, member: int, name: str, end_ns: int, error: str | None) -> None:
        span = self._open[member].pop(name)
        self._records[member].append(
            SpanRecord(
                name=span.name,
                start_ns=span.start_ns,
                end_ns=end_ns,
                attributes=span.attributes,
                events=tuple(span.events),
                error=error,
            )
        )


UNTRACED = BatchRecorder(())
"""The recorder of a call nobody traces (``Engine.generate`` outside a worker)."""
