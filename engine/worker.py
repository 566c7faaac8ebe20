"""A replica's process: loads one model, then runs the batches the scheduler sends, one at a time.

Started by the scheduler as ``python -m engine.worker --fd N`` with one end of a socket pair as
file descriptor N. The main thread runs the pipeline; a reader thread receives messages so that a
cancel reaches the denoising loop while a batch runs (it is checked at every step boundary).

Environment: ``POINTILLIST_CPU_THREADS`` caps torch's CPU threads (a replica's share of the
cores). The ``POINTILLIST_FAULT_*`` settings inject faults for tests (``engine.faults``).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine import faults, ipc
from engine.device_memory import DeviceMemoryMeter
from engine.job import GenerationCancelled, GenerationOutput, StepPreview, StepProgress
from engine.worker_tracing import BatchRecorder, SpanRecord

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger("pointillist.worker")

CPU_THREADS_ENV = "POINTILLIST_CPU_THREADS"


@dataclass
class _RunningJob:
    """What the reader thread needs to know about a job the main thread runs."""

    job_id: str
    completed_steps: int = 0
    steps_at_cancel: int | None = None
    # When the last step ended, in the loop's clock (StepProgress.elapsed_s): a step's duration.
    last_step_elapsed_s: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Receives messages on the socket and runs batches on the main thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._batches: queue.Queue[ipc.RunBatch | None] = queue.Queue()
        self._running: dict[str, _RunningJob] = {}
        # Jobs received but not started yet, and those among them already cancelled: a cancel can
        # overtake the start of its job, and must not be lost.
        self._pending: set[str] = set()
        self._cancelled_before_start: set[str] = set()
        self._lock = threading.Lock()
        self._socket_closed = threading.Event()

    def send(self, message: ipc.FromWorker) -> None:
        with self._send_lock:
            ipc.send_blocking(self._sock, message)

    def serve(self) -> int:
        first = ipc.receive_blocking(self._sock)
        if not isinstance(first, ipc.LoadModel):
            return 2
        try:
            from engine.engine import Engine

            # Before the first CUDA call: the meter measures the context as it creates it.
            meter = DeviceMemoryMeter.start(first.config.device)
            engine = Engine.load(first.config)
            self.send(ipc.WorkerWarming())
            engine.warm_up(first.warm_up)
            device_memory = _device_memory(meter)
        except Exception as exc:  # the scheduler reports it; the worker has nothing left to do
            log.exception("loading %s failed", first.config.id)
            self.send(ipc.WorkerFailed(message=f"{type(exc).__name__}: {exc}"))
            return 1
        self.send(
            ipc.WorkerReady(
                loaded=engine.loaded,
                memory_bytes=_resident_bytes(),
                device_memory_bytes=device_memory,
            )
        )
        threading.Thread(target=self._receive_loop, name="ipc-reader", daemon=True).start()
        while (batch := self._batches.get()) is not None:
            self._run(engine, batch)
        return 0

    def _receive_loop(self) -> None:
        while True:
            message = ipc.receive_blocking(self._sock)
            if message is None or isinstance(message, ipc.Shutdown):
                # A closed socket means the scheduler is gone: stop the work in hand and exit.
                if message is None:
                    self._socket_closed.set()
                    self._cancel(None)
                self._batches.put(None)
                return
            if isinstance(message, ipc.RunBatch):
                with self._lock:
                    self._pending.update(job.job_id for job in message.jobs)
                self._batches.put(message)
            elif isinstance(message, ipc.CancelJob):
                self._cancel(message.job_id)

    def _cancel(self, job_id: str | None) -> None:
        """Cancel one job (or, with None, everything running)."""
        with self._lock:
            if job_id is not None and job_id in self._pending:
                self._cancelled_before_start.add(job_id)
                return
            targets = list(self._running.values()) if job_id is None else []
            if job_id in self._running:
                targets = [self._running[job_id]]
            for running in targets:  # a finished job is gone: JobDone already told the scheduler
                if running.steps_at_cancel is None:
                    running.steps_at_cancel = running.completed_steps
                running.cancel.set()

    def _run(self, engine: Engine, batch: ipc.RunBatch) -> None:
        members = [_RunningJob(job.job_id) for job in batch.jobs]
        with self._lock:
            for member in members:
                self._pending.discard(member.job_id)
                if member.job_id in self._cancelled_before_start:
                    self._cancelled_before_start.discard(member.job_id)
                    member.steps_at_cancel = 0
                    member.cancel.set()
                self._running[member.job_id] = member

        recorder = BatchRecorder([bool(job.trace_context) for job in batch.jobs])
        step_faults = faults.StepFaults(
            [job.spec.prompt for job in batch.jobs], self._socket_closed
        )

        def on_event(index: int, event: StepProgress | StepPreview) -> None:
            member = members[index]
            if isinstance(event, StepProgress):
                member.completed_steps = event.step
                if recorder.enabled:
                    _record_step(recorder, index, member, event)
            self.send(ipc.StepEvent(job_id=member.job_id, event=event))
            if isinstance(event, StepProgress):
                step_faults.after_step(index, member.cancel)

        reported: set[int] = set()
        cancelled: set[int] = set()  # their spans go with BatchDone

        def on_outcome(index: int, outcome: GenerationOutput | GenerationCancelled) -> None:
            # At once: a cancelled member must not wait for its batch-mates, nor a finished
            # one for their decoding.
            reported.add(index)
            done = isinstance(outcome, GenerationOutput)  # then all its phases are over
            if not done:
                cancelled.add(index)
            self.send(
                _outcome_message(members[index], outcome, recorder.records(index) if done else ())
            )

        try:
            faults.raise_injected_out_of_memory(batch)
            faults.raise_injected_failure(batch)
            engine.generate_batch(
                [job.spec for job in batch.jobs],
                on_event,
                lambda index: members[index].cancel.is_set(),
                recorder,
                on_outcome,
            )
        except Exception as exc:
            log.exception(
                "batch %s failed (trace ids %s)",
                [member.job_id for member in members],
                [_trace_id(job.trace_context) for job in batch.jobs],
            )
            out_of_memory = _is_out_of_memory(exc)
            for index, member in enumerate(members):
                if index in reported:
                    continue
                self.send(
                    ipc.JobFailed(
                        job_id=member.job_id,
                        message=f"{type(exc).__name__}: {exc}",
                        out_of_memory=out_of_memory,
                        spans=recorder.records(index),
                    )
                )
        finally:
            with self._lock:
                for member in members:
                    self._running.pop(member.job_id, None)
        spans = {members[index].job_id: recorder.records(index) for index in cancelled}
        self.send(ipc.BatchDone(spans=spans))


def _outcome_message(
    member: _RunningJob,
    outcome: GenerationOutput | GenerationCancelled,
    spans: tuple[SpanRecord, ...],
) -> ipc.FromWorker:
    if isinstance(outcome, GenerationOutput):
        return ipc.JobDone(job_id=member.job_id, output=outcome, spans=spans)
    at_cancel = member.steps_at_cancel or 0
    return ipc.JobCancelled(
        job_id=member.job_id,
        completed_steps=outcome.completed_steps,
        steps_after_cancel=max(0, outcome.completed_steps - at_cancel),
    )


def _record_step(
    recorder: BatchRecorder, index: int, member: _RunningJob, event: StepProgress
) -> None:
    """One event per denoising step on the member's denoising span, with the step's duration;
    the last step also notes the replica's memory (what it holds at its peak of the job)."""
    duration = event.elapsed_s - member.last_step_elapsed_s
    member.last_step_elapsed_s = event.elapsed_s
    recorder.event(
        index,
        "denoising",
        "step",
        **{"pointillist.step": event.step, "pointillist.step.duration_s": duration},
    )
    if event.step == event.total_steps:
        recorder.annotate(index, "denoising", **{"pointillist.replica.memory_bytes": _memory()})


def _memory() -> int:
    """The replica's memory: the CUDA allocator's reservation on a GPU, else resident memory."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.memory_reserved())
    return _resident_bytes()


def _device_memory(meter: DeviceMemoryMeter) -> int | None:
    """The GPU memory to report after the warm-up (an injected figure first), logged."""
    injected = faults.injected_device_memory()
    if injected is not None:
        return injected
    measured = meter.finish()
    if measured is None:
        return None
    context = measured.context_bytes
    log.info(
        "device memory after warm-up: %.0f MiB (allocator %.0f MiB + CUDA context %s)",
        measured.bytes / 2**20,
        measured.reserved_bytes / 2**20,
        "not measured" if context is None else f"{context / 2**20:.0f} MiB",
    )
    return measured.bytes


def _trace_id(carrier: dict[str, str]) -> str:
    """The trace id of a W3C ``traceparent`` (version-traceid-spanid-flags), or "" if none."""
    parts = carrier.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else ""


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def _resident_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pointillist replica worker")
    parser.add_argument("--fd", type=int, required=True, help="socket file descriptor to talk on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("POINTILLIST_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if threads := os.environ.get(CPU_THREADS_ENV):
        import torch

        torch.set_num_threads(max(1, int(threads)))
    sock = socket.socket(fileno=args.fd)
    try:
        return Worker(sock).serve()
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
