"""A job's record and events as bytes for the shared job store (Redis), and back, without pickle.

Every entry of a job's stream is one ``(kind, data)`` pair: ``record`` first (what the job is and
who owns it), then its events in order, then ``end`` (how it ended). Like the result codec, what
comes back from a shared store is parsed, never unpickled. Times travel as wall-clock seconds
(each server's ``time.monotonic()`` has its own origin) and are turned back into this server's
monotonic clock on decoding.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from engine.job import (
    DeviceInfo,
    EncodedImage,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    InputImage,
    PreviewSettings,
    StepPreview,
    StepProgress,
)
from scheduler import errors
from scheduler.errors import SchedulerError
from scheduler.job import JobEvent, JobState, Queued, Started
from scheduler.result_codec import CorruptEntryError, decode_output, encode_output

_HEADER_LENGTH = struct.Struct(">I")

# The errors a job can end with, by name; each takes its message alone. Anything else decodes as
# JobFailedError with the same message (a newer server's error reaching an older one).
_END_ERRORS: dict[str, type[SchedulerError]] = {
    cls.__name__: cls
    for cls in (
        errors.JobCancelledError,
        errors.JobDeadlineError,
        errors.JobFailedError,
        errors.ReplicaCrashedError,
        errors.ReplicaHungError,
        errors.JobOutOfMemoryError,
        errors.JobServerLostError,
        errors.NotServingError,
    )
}


@dataclass(frozen=True)
class JobRecord:
    """What a job is: enough for GetJob and WatchJob on any server, and who runs it."""

    job_id: str
    owner: str  # the server id whose lease keeps the job alive
    spec: GenerationSpec  # input images keep their size and hash, not their pixels
    caller: str
    priority: int
    submitted_at: float  # this server's monotonic clock


@dataclass(frozen=True)
class JobEnd:
    """How a job ended."""

    state: JobState
    error: SchedulerError | None
    cancel_requested: bool
    finished_at: float  # this server's monotonic clock


def wall(monotonic: float) -> float:
    """A ``time.monotonic()`` value as wall-clock seconds."""
    return time.time() - (time.monotonic() - monotonic)


def local(wall_s: float) -> float:
    """Wall-clock seconds (from any server) as this server's ``time.monotonic()``."""
    return time.monotonic() - (time.time() - wall_s)


def encode_record(record: JobRecord) -> bytes:
    # Input pixels stay with the owner (they can be megabytes): the record keeps their hash.
    spec = dataclasses.asdict(dataclasses.replace(record.spec, init_image=None, mask=None))
    spec["init_image"] = _input_meta(record.spec.init_image)
    spec["mask"] = _input_meta(record.spec.mask)
    document = {
        "job_id": record.job_id,
        "owner": record.owner,
        "spec": spec,
        "caller": record.caller,
        "priority": record.priority,
        "submitted_wall": wall(record.submitted_at),
    }
    return _json(document)


def decode_record(data: bytes) -> JobRecord:
    try:
        document = json.loads(data)
        spec = dict(document["spec"])
        spec["preview"] = PreviewSettings(**spec["preview"])
        spec["output_format"] = ImageFormat(spec["output_format"])
        spec["init_image"] = _input_from_meta(spec["init_image"])
        spec["mask"] = _input_from_meta(spec["mask"])
        return JobRecord(
            job_id=str(document["job_id"]),
            owner=str(document["owner"]),
            spec=GenerationSpec(**spec),
            caller=str(document["caller"]),
            priority=int(document["priority"]),
            submitted_at=local(float(document["submitted_wall"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntryError(f"job record: {type(exc).__name__}: {exc}") from exc


def encode_end(end: JobEnd) -> bytes:
    error = end.error
    return _json(
        {
            "state": end.state.value,
            "error": type(error).__name__ if error is not None else None,
            "message": str(error) if error is not None else "",
            "cancel_requested": end.cancel_requested,
            "finished_wall": wall(end.finished_at),
        }
    )


def decode_end(data: bytes) -> JobEnd:
    try:
        document = json.loads(data)
        error: SchedulerError | None = None
        if document["error"] is not None:
            cls = _END_ERRORS.get(str(document["error"]), errors.JobFailedError)
            error = cls(str(document["message"]))
        return JobEnd(
            state=JobState(document["state"]),
            error=error,
            cancel_requested=bool(document["cancel_requested"]),
            finished_at=local(float(document["finished_wall"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntryError(f"job end: {type(exc).__name__}: {exc}") from exc


def encode_event(event: JobEvent) -> tuple[str, bytes]:
    """The event's kind and bytes."""
    if isinstance(event, GenerationOutput):
        return "output", encode_output(event)
    if isinstance(event, StepPreview):
        header = _json({"step": event.step, "images": [_image_meta(i) for i in event.images]})
        return "preview", b"".join(
            [_HEADER_LENGTH.pack(len(header)), header, *(image.data for image in event.images)]
        )
    if isinstance(event, StepProgress):
        return "progress", _json(dataclasses.asdict(event))
    if isinstance(event, Started):
        return "started", _json(dataclasses.asdict(event))
    return "queued", _json(dataclasses.asdict(event))


def decode_event(kind: str, data: bytes) -> JobEvent:
    """The event ``encode_event`` wrote; raises CorruptEntryError for anything else."""
    try:
        if kind == "output":
            return decode_output(data)
        if kind == "preview":
            return _decode_preview(data)
        document = json.loads(data)
        if kind == "progress":
            return StepProgress(**document)
        if kind == "started":
            document["device"] = DeviceInfo(**document["device"])
            return Started(**document)
        if kind == "queued":
            return Queued(**document)
    except CorruptEntryError:
        raise
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CorruptEntryError(f"{kind} event: {type(exc).__name__}: {exc}") from exc
    raise CorruptEntryError(f"unknown event kind {kind!r}")


def _decode_preview(data: bytes) -> StepPreview:
    (length,) = _HEADER_LENGTH.unpack_from(data)
    start = _HEADER_LENGTH.size
    header = json.loads(data[start : start + length])
    offset = start + length
    images = []
    for item in header["images"]:
        size = int(item.pop("size"))
        images.append(EncodedImage(data=data[offset : offset + size], **item))
        offset += size
    if offset != len(data):
        raise CorruptEntryError("preview: the image bytes do not add up")
    return StepPreview(step=int(header["step"]), images=tuple(images))


def _image_meta(image: EncodedImage) -> dict[str, Any]:
    return {
        "size": len(image.data),
        "mime_type": image.mime_type,
        "width": image.width,
        "height": image.height,
        "seed": image.seed,
    }


def _input_meta(image: InputImage | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {
        "width": image.width,
        "height": image.height,
        "channels": image.channels,
        "sha256": image.sha256,
    }


def _input_from_meta(meta: dict[str, Any] | None) -> InputImage | None:
    if meta is None:
        return None
    return InputImage(pixels=b"", **meta)


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
