"""A replica's process: loads one model, then runs the jobs the scheduler sends, one at a time.

Started by the scheduler as ``python -m engine.worker --fd N`` with one end of a socket pair as
file descriptor N. The main thread runs the pipeline; a reader thread receives messages so that a
cancel reaches the denoising loop while a job runs (it is checked at every step boundary).
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

from engine import ipc
from engine.job import GenerationCancelled, GenerationSpec, StepPreview, StepProgress

log = logging.getLogger("pointillist.worker")


@dataclass
class _RunningJob:
    """What the reader thread needs to know about the job the main thread runs."""

    job_id: str
    completed_steps: int = 0
    steps_at_cancel: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Receives messages on the socket and runs jobs on the main thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._jobs: queue.Queue[ipc.RunJob | None] = queue.Queue()
        self._running: _RunningJob | None = None
        # Jobs received but not started yet, and those among them already cancelled: a cancel can
        # overtake the start of its job, and must not be lost.
        self._pending: set[str] = set()
        self._cancelled_before_start: set[str] = set()
        self._running_lock = threading.Lock()

    def send(self, message: ipc.FromWorker) -> None:
        with self._send_lock:
            ipc.send_blocking(self._sock, message)

    def serve(self) -> int:
        first = ipc.receive_blocking(self._sock)
        if not isinstance(first, ipc.LoadModel):
            return 2
        try:
            from engine.engine import Engine

            engine = Engine.load(first.config)
            engine.warm_up()
        except Exception as exc:  # the scheduler reports it; the worker has nothing left to do
            log.exception("loading %s failed", first.config.id)
            self.send(ipc.WorkerFailed(message=f"{type(exc).__name__}: {exc}"))
            return 1
        self.send(ipc.WorkerReady(loaded=engine.loaded, memory_bytes=_resident_bytes()))
        threading.Thread(target=self._receive_loop, name="ipc-reader", daemon=True).start()
        while (message := self._jobs.get()) is not None:
            self._run(engine, message.job_id, message.spec)
        return 0

    def _receive_loop(self) -> None:
        while True:
            message = ipc.receive_blocking(self._sock)
            if message is None or isinstance(message, ipc.Shutdown):
                # A closed socket means the scheduler is gone: stop the job in hand and exit.
                if message is None:
                    self._cancel_running(None)
                self._jobs.put(None)
                return
            if isinstance(message, ipc.RunJob):
                with self._running_lock:
                    self._pending.add(message.job_id)
                self._jobs.put(message)
            elif isinstance(message, ipc.CancelJob):
                self._cancel_running(message.job_id)

    def _cancel_running(self, job_id: str | None) -> None:
        with self._running_lock:
            running = self._running
            if job_id is not None and job_id in self._pending:
                self._cancelled_before_start.add(job_id)
                return
            if running is None or (job_id is not None and running.job_id != job_id):
                return  # finished already: the scheduler learns that from JobDone
            if running.steps_at_cancel is None:
                running.steps_at_cancel = running.completed_steps
            running.cancel.set()

    def _run(self, engine: object, job_id: str, spec: GenerationSpec) -> None:
        from engine.engine import Engine

        assert isinstance(engine, Engine)
        running = _RunningJob(job_id)
        with self._running_lock:
            self._pending.discard(job_id)
            if job_id in self._cancelled_before_start:
                self._cancelled_before_start.discard(job_id)
                running.steps_at_cancel = 0
                running.cancel.set()
            self._running = running

        def on_event(event: StepProgress | StepPreview) -> None:
            if isinstance(event, StepProgress):
                running.completed_steps = event.step
            self.send(ipc.StepEvent(job_id=job_id, event=event))

        try:
            output = engine.generate(spec, on_event, running.cancel.is_set)
            self.send(ipc.JobDone(job_id=job_id, output=output))
        except GenerationCancelled as cancelled:
            at_cancel = running.steps_at_cancel or 0
            self.send(
                ipc.JobCancelled(
                    job_id=job_id,
                    completed_steps=cancelled.completed_steps,
                    steps_after_cancel=max(0, cancelled.completed_steps - at_cancel),
                )
            )
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self.send(
                ipc.JobFailed(
                    job_id=job_id,
                    message=f"{type(exc).__name__}: {exc}",
                    out_of_memory=_is_out_of_memory(exc),
                )
            )
        finally:
            with self._running_lock:
                self._running = None


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
    sock = socket.socket(fileno=args.fd)
    try:
        return Worker(sock).serve()
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
