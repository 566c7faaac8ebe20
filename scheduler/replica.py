"""A replica as the scheduler sees it: one worker process, its state, and the jobs it runs.

The worker talks over one end of a socket pair (see engine.ipc). Its death is noticed the moment
the socket closes, not at the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine import ipc
from engine.config import ModelConfig
from engine.job import GenerationSpec, LoadedModel, StepPreview, StepProgress
from engine.worker_tracing import SpanRecord

log = logging.getLogger("pointillist.replica")


class ReplicaState(StrEnum):
    """Life of a replica."""

    STARTING = "starting"
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class ReplicaStartError(Exception):
    """The worker could not load its model (or died while loading)."""


class WorkerDiedError(Exception):
    """The worker process exited while it had a job, or before it was asked to stop."""


JobOutcome = ipc.JobDone | ipc.JobCancelled | ipc.JobFailed


@dataclass(frozen=True)
class BatchRun:
    """What one batch left: each job's outcome, and each job's traced phases in the worker."""

    outcomes: dict[str, JobOutcome]
    spans: dict[str, tuple[SpanRecord, ...]]


BatchStepCallback = Callable[[str, StepProgress | StepPreview], Awaitable[None] | None]


class Replica:
    """One worker process running one model on one device."""

    def __init__(
        self, replica_id: str, config: ModelConfig, env: dict[str, str] | None = None
    ) -> None:
        self.id = replica_id
        self.config = config
        self.state = ReplicaState.STOPPED
        self.loaded: LoadedModel | None = None
        self.memory_bytes = 0  # resident memory, as the worker reported it when ready
        # GPU memory the worker measured itself (engine.device_memory); None on the CPU.
        self.device_memory_bytes: int | None = None
        self._env = env or {}
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[ipc.FromWorker | None] = asyncio.Queue()
        self.exited: asyncio.Event = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(
        self,
        timeout_s: float,
        warm_up: GenerationSpec | None = None,
        on_spawned: Callable[[int], None] | None = None,
    ) -> None:
        """Spawn the worker, load and warm the model; raises ReplicaStartError on failure.

        ``warm_up`` is the request to warm up with (the model's largest, so the memory measured
        afterwards covers it); ``on_spawned(pid)`` runs as soon as the process exists.
        """
        self.state = ReplicaState.STARTING
        self.exited = asyncio.Event()
        self._inbox = asyncio.Queue()
        parent_sock, child_sock = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "engine.worker",
                "--fd",
                str(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                env={**os.environ, **self._env},
            )
        finally:
            child_sock.close()
        if on_spawned is not None:
            on_spawned(self._process.pid)
        reader, self._writer = await asyncio.open_unix_connection(sock=parent_sock)
        self._reader_task = asyncio.create_task(self._read(reader), name=f"replica-{self.id}")
        self.state = ReplicaState.LOADING
        await self._send(ipc.LoadModel(self.config, warm_up))
        try:
            first = await asyncio.wait_for(self._answer_to_load(), timeout_s)
        except TimeoutError:
            await self.kill()
            raise ReplicaStartError(
                f"replica {self.id} did not load within {timeout_s:.0f}s"
            ) from None
        if isinstance(first, ipc.WorkerReady):
            self.loaded = first.loaded
            self.memory_bytes = first.memory_bytes
            self.device_memory_bytes = first.device_memory_bytes
            self.state = ReplicaState.READY
            log.info(
                "replica %s ready: model %s on %s, %.0f MiB resident%s",
                self.id,
                self.config.id,
                first.loaded.device.name,
                first.memory_bytes / 2**20,
                ""
                if first.device_memory_bytes is None
                else f", {first.device_memory_bytes / 2**20:.0f} MiB on its GPU by its own count",
            )
            return
        self.state = ReplicaState.FAILED
        await self.kill()
        reason = first.message if isinstance(first, ipc.WorkerFailed) else "worker exited"
        raise ReplicaStartError(f"replica {self.id} failed to load {self.config.id}: {reason}")

    async def _answer_to_load(self) -> ipc.FromWorker | None:
        """The worker's final answer to LoadModel; WorkerWarming on the way moves the state."""
        while isinstance(message := await self._inbox.get(), ipc.WorkerWarming):
            self.state = ReplicaState.WARMING
        return message

    async def run_batch(
        self,
        jobs: Sequence[tuple[str, GenerationSpec, dict[str, str]]],
        on_step: BatchStepCallback,
        on_outcome: Callable[[JobOutcome], None] | None = None,
    ) -> BatchRun:
        """Run jobs (id, spec, W3C trace carrier) in one pipeline call; ``on_step(job_id,
        event)`` gets each job's events, ``on_outcome(outcome)`` each job's outcome the moment
        the worker decides it (a member cancelled mid-batch, or done before its batch-mates).

        Returns every outcome and the traced phases once the worker is free. Raises
        WorkerDiedError if the worker dies meanwhile.
        """
        self.state = ReplicaState.BUSY
        outcomes: dict[str, JobOutcome] = {}
        try:
            await self._send(ipc.RunBatch(tuple(ipc.RunJob(*job) for job in jobs)))
            while True:
                message = await self._inbox.get()
                if message is None:
                    raise WorkerDiedError(f"replica {self.id} (pid {self.pid}) exited mid-batch")
                if isinstance(message, ipc.StepEvent):
                    maybe = on_step(message.job_id, message.event)
                    if maybe is not None:
                        await maybe
                elif isinstance(message, ipc.JobDone | ipc.JobCancelled | ipc.JobFailed):
                    outcomes[message.job_id] = message
                    if on_outcome is not None:
                        on_outcome(message)
                elif isinstance(message, ipc.BatchDone):
                    missing = {job_id for job_id, _, _ in jobs} - set(outcomes)
                    if missing:
                        raise WorkerDiedError(f"replica {self.id} left {missing} without outcome")
                    return BatchRun(outcomes, message.spans)
        finally:
            if self.state is ReplicaState.BUSY:
                self.state = ReplicaState.READY

    async def cancel(self, job_id: str) -> None:
        """Ask the worker to stop ``job_id`` at its next step boundary."""
        with contextlib.suppress(ConnectionError, WorkerDiedError):
            await self._send(ipc.CancelJob(job_id))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the worker to exit after its current job; kill it if it does not."""
        if self._process is None:
            return
        self.state = ReplicaState.DRAINING
        with contextlib.suppress(ConnectionError, WorkerDiedError):
            await self._send(ipc.Shutdown())
        try:
            await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            log.warning("replica %s did not exit in %.0fs; killing it", self.id, timeout_s)
        await self.kill()
        self.state = ReplicaState.STOPPED

    async def kill(self) -> None:
        """End the worker process now and wait for it."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)

    async def _send(self, message: ipc.ToWorker) -> None:
        if self._writer is None or self.exited.is_set():
            raise WorkerDiedError(f"replica {self.id} is not running")
        try:
            self._writer.write(ipc.encode(message))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            # The worker died before its reader saw the socket close: the same as a death
            # noticed a moment later, so callers handle one error.
            raise WorkerDiedError(f"replica {self.id} (pid {self.pid}) is gone: {exc!r}") from exc

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(ipc.HEADER_SIZE)
                payload = await reader.readexactly(ipc.decode_length(header))
                message = ipc.decode_payload(payload)
                if isinstance(message, ipc.FROM_WORKER_TYPES):
                    self._inbox.put_nowait(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker exited; the socket closed with it
        finally:
            if self.state not in (ReplicaState.DRAINING, ReplicaState.STOPPED):
                self.state = ReplicaState.FAILED
            self.exited.set()
            self._inbox.put_nowait(None)
