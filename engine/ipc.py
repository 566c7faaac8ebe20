"""The small protocol between the scheduler and a worker process.

Messages are the dataclasses below, pickled and framed with a 4-byte big-endian length, over one
end of a socket pair that the scheduler creates (so stdout/stderr stay free for logs). Both ends
are our own processes; nothing here ever reads bytes from the network.
"""

from __future__ import annotations

import pickle
import socket
import struct
from dataclasses import dataclass, field

from engine.config import ModelConfig
from engine.job import GenerationOutput, GenerationSpec, LoadedModel, StepPreview, StepProgress
from engine.worker_tracing import SpanRecord

_HEADER = struct.Struct(">I")


# Scheduler -> worker


@dataclass(frozen=True)
class LoadModel:
    """First message: load this model, warm it up (with ``warm_up`` when given: the scheduler
    passes the model's largest request so the measured memory covers it), answer WorkerReady
    (or WorkerFailed)."""

    config: ModelConfig
    warm_up: GenerationSpec | None = None


@dataclass(frozen=True)
class RunJob:
    """One member of a batch. ``trace_context`` is the W3C carrier (``traceparent``, maybe
    ``tracestate``) of the server's dispatch span; empty when the job is not traced."""

    job_id: str
    spec: GenerationSpec
    trace_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunBatch:
    """Run these jobs in one pipeline call (one job is a batch of one); answer StepEvents, then
    exactly one of JobDone/JobCancelled/JobFailed per job."""

    jobs: tuple[RunJob, ...]


@dataclass(frozen=True)
class CancelJob:
    """Stop the running job at its next step boundary."""

    job_id: str


@dataclass(frozen=True)
class Shutdown:
    """Finish the current job (if any), then exit."""


# Worker -> scheduler


@dataclass(frozen=True)
class WorkerWarming:
    """The model is loaded; the warm-up request runs next."""


@dataclass(frozen=True)
class WorkerReady:
    """The model is loaded and warm. ``memory_bytes`` is the process's resident memory;
    ``device_memory_bytes`` what it measured on its GPU (``engine.device_memory``: the
    allocator's reservation plus the CUDA context), None on the CPU."""

    loaded: LoadedModel
    memory_bytes: int
    device_memory_bytes: int | None = None


@dataclass(frozen=True)
class WorkerFailed:
    """The worker could not load its model; it exits after sending this."""

    message: str


@dataclass(frozen=True)
class StepEvent:
    """A progress or preview event of a running job."""

    job_id: str
    event: StepProgress | StepPreview


@dataclass(frozen=True)
class JobDone:
    """The job finished with a result: sent as soon as its own images are encoded, before its
    batch-mates' (each member's JobDone, JobCancelled or JobFailed comes once, when decided).
    ``spans``: its traced phases (``engine.worker_tracing``), here and in JobFailed; empty when
    it is not traced."""

    job_id: str
    output: GenerationOutput
    spans: tuple[SpanRecord, ...] = ()


@dataclass(frozen=True)
class JobCancelled:
    """The job stopped early; ``steps_after_cancel`` steps ran after the cancel arrived."""

    job_id: str
    completed_steps: int
    steps_after_cancel: int


@dataclass(frozen=True)
class JobFailed:
    """The job raised. ``out_of_memory`` is set for the device's out-of-memory error."""

    job_id: str
    message: str
    out_of_memory: bool = False
    spans: tuple[SpanRecord, ...] = ()


@dataclass(frozen=True)
class BatchDone:
    """The batch is over and the worker free: the last message of every RunBatch, after every
    member's outcome. ``spans``: the traced phases of the cancelled members, sent here because
    a member cancelled mid-loop is reported at once, while its denoising phase runs on with its
    batch-mates until the loop ends."""

    spans: dict[str, tuple[SpanRecord, ...]]


ToWorker = LoadModel | RunBatch | CancelJob | Shutdown
FromWorker = (
    WorkerWarming
    | WorkerReady
    | WorkerFailed
    | StepEvent
    | JobDone
    | JobCancelled
    | JobFailed
    | BatchDone
)
FROM_WORKER_TYPES = (
    WorkerWarming,
    WorkerReady,
    WorkerFailed,
    StepEvent,
    JobDone,
    JobCancelled,
    JobFailed,
    BatchDone,
)


def encode(message: ToWorker | FromWorker) -> bytes:
    """Frame one message."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def decode_length(header: bytes) -> int:
    """Payload length from a frame header."""
    (length,) = _HEADER.unpack(header)
    return int(length)


HEADER_SIZE = _HEADER.size


def send_blocking(sock: socket.socket, message: ToWorker | FromWorker) -> None:
    """Send one message on a blocking socket (the worker side)."""
    sock.sendall(encode(message))


def receive_blocking(sock: socket.socket) -> ToWorker | FromWorker | None:
    """Receive one message on a blocking socket; None when the peer closed it."""
    header = _receive_exactly(sock, HEADER_SIZE)
    if header is None:
        return None
    payload = _receive_exactly(sock, decode_length(header))
    if payload is None:
        return None
    return decode_payload(payload)


def decode_payload(payload: bytes) -> ToWorker | FromWorker:
    """The message inside a frame's payload."""
    message: ToWorker | FromWorker = pickle.loads(payload)
    return message


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks.extend(chunk)
    return bytes(chunks)
