"""Domain objects (engine.job, scheduler) to protobuf messages, and the two request values that
are not generation parameters (priority, caller) to the scheduler's terms. Proto types stop at
server/; request parameters become a GenerationSpec in server.validation."""

from __future__ import annotations

import time
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from engine.job import (
    ComponentPrecision,
    DeviceInfo,
    EncodedImage,
    GenerationMode,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    StepPreview,
    StepProgress,
)
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2 as jobs_pb
from pointillist.v1 import status_pb2 as status_pb
from scheduler.interface import ModelStatus
from scheduler.inventory import DeviceSnapshot
from scheduler.job import Job, JobEvent, JobState, Queued, Started
from scheduler.status import ModelQueueStatus, ReplicaStatus, SchedulerStatus
from server import errors
from server.caller_identity import caller_of
from server.validation import FieldViolation, InvalidRequestError

_PRECISIONS = {
    "fp32": pb.PRECISION_FP32,
    "fp16": pb.PRECISION_FP16,
    "bf16": pb.PRECISION_BF16,
    "fp8_e4m3": pb.PRECISION_FP8_E4M3,
}
_DEVICE_KINDS = {"cpu": pb.DEVICE_KIND_CPU, "cuda": pb.DEVICE_KIND_CUDA}
_IMAGE_FORMATS = {
    ImageFormat.PNG: pb.IMAGE_FORMAT_PNG,
    ImageFormat.JPEG: pb.IMAGE_FORMAT_JPEG,
    ImageFormat.WEBP: pb.IMAGE_FORMAT_WEBP,
}
SCHEDULING_PRIORITIES: dict[int, int] = {
    pb.PRIORITY_UNSPECIFIED: 0,
    pb.PRIORITY_LOW: -1,
    pb.PRIORITY_NORMAL: 0,
    pb.PRIORITY_HIGH: 1,
}
"""Request priority -> the scheduler's ``priority`` (higher runs first; absent means normal)."""
_JOB_STATES = {
    JobState.QUEUED: jobs_pb.JOB_STATE_QUEUED,
    JobState.RUNNING: jobs_pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jobs_pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jobs_pb.JOB_STATE_FAILED,
    JobState.CANCELLED: jobs_pb.JOB_STATE_CANCELLED,
}
_REPLICA_STATES = {
    "starting": status_pb.REPLICA_STATE_STARTING,
    "loading": status_pb.REPLICA_STATE_LOADING,
    "warming": status_pb.REPLICA_STATE_WARMING,
    "ready": status_pb.REPLICA_STATE_READY,
    "busy": status_pb.REPLICA_STATE_BUSY,
    "draining": status_pb.REPLICA_STATE_DRAINING,
    "stopped": status_pb.REPLICA_STATE_STOPPED,
    "failed": status_pb.REPLICA_STATE_FAILED,
}
# Jobs keep time.monotonic() values; timestamps add this process-wide offset to them, so a job's
# times stay the same from one GetJob to the next (they move if the wall clock is stepped).
_WALL_CLOCK_OFFSET_S = time.time() - time.monotonic()

Envelope = TypeVar("Envelope", pb.StreamGenerateResponse, jobs_pb.WatchJobResponse)


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return message


def timestamp(monotonic_s: float) -> timestamp_pb2.Timestamp:
    """A ``time.monotonic()`` value as a wall-clock timestamp."""
    message = timestamp_pb2.Timestamp()
    message.FromNanoseconds(int((monotonic_s + _WALL_CLOCK_OFFSET_S) * 1e9))
    return message


def device(info: DeviceInfo) -> pb.Device:
    return pb.Device(
        kind=_DEVICE_KINDS.get(info.kind, pb.DEVICE_KIND_UNSPECIFIED), id=info.id, name=info.name
    )


def precision(component: ComponentPrecision) -> pb.ComponentPrecision:
    return pb.ComponentPrecision(
        component=component.component,
        weights=_PRECISIONS.get(component.weights, pb.PRECISION_UNSPECIFIED),
        compute=_PRECISIONS.get(component.compute, pb.PRECISION_UNSPECIFIED),
    )


def image(encoded: EncodedImage) -> pb.Image:
    return pb.Image(
        data=encoded.data,
        mime_type=encoded.mime_type,
        width=encoded.width,
        height=encoded.height,
        seed=encoded.seed,
        url=encoded.url,
    )


_MODES = {
    GenerationMode.TEXT_TO_IMAGE: pb.GENERATION_MODE_TEXT_TO_IMAGE,
    GenerationMode.IMAGE_TO_IMAGE: pb.GENERATION_MODE_IMAGE_TO_IMAGE,
    GenerationMode.INPAINTING: pb.GENERATION_MODE_INPAINTING,
}


def parameters(spec: GenerationSpec) -> pb.GenerationParameters:
    """The resolved spec as request parameters: sending them again redoes the same images."""
    return pb.GenerationParameters(
        model=spec.model,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        width=spec.width,
        height=spec.height,
        steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        seed=spec.seed,
        num_images=spec.num_images,
        output_format=_IMAGE_FORMATS[spec.output_format],
        quality=spec.quality,
        preview=pb.PreviewOptions(
            every_n_steps=spec.preview.every_n_steps, max_size=spec.preview.max_size
        ),
        # The input images are not echoed (megabytes); the reproducibility record has their
        # hashes, and a client sends them again with these parameters.
        strength=spec.strength if spec.init_image is not None else None,
    )


def result(output: GenerationOutput, spec: GenerationSpec) -> pb.GenerationResult:
    timings = output.timings
    provenance = output.provenance
    return pb.GenerationResult(
        images=[image(item) for item in output.images],
        timings=pb.Timings(
            queue_wait=duration(timings.queue_wait_s),
            text_encoding=duration(timings.text_encoding_s),
            denoising=duration(timings.denoising_s),
            decoding=duration(timings.decoding_s),
            image_encoding=duration(timings.image_encoding_s),
            total=duration(timings.total_s),
            text_encoding_cached=timings.text_encoding_cached,
        ),
        cached=output.cached,
        reproducibility=pb.Reproducibility(
            model_id=provenance.model_id,
            weights_revision=provenance.weights_revision,
            precisions=[precision(item) for item in provenance.precisions],
            scheduler=provenance.scheduler,
            library_versions=provenance.library_versions,
            device=device(provenance.device),
            parameters=parameters(spec),
            mode=_MODES[spec.mode],
            init_image_sha256=spec.init_image.sha256 if spec.init_image else "",
            mask_sha256=spec.mask.sha256 if spec.mask else "",
        ),
    )


def stream_response(job: Job, event: JobEvent) -> pb.StreamGenerateResponse:
    """One StreamGenerate envelope for one event of ``job``."""
    return event_envelope(pb.StreamGenerateResponse, job, event)


def watch_response(job: Job, event: JobEvent) -> jobs_pb.WatchJobResponse:
    """One WatchJob envelope for one event of ``job``: the same fields as StreamGenerate's."""
    return event_envelope(jobs_pb.WatchJobResponse, job, event)


def event_envelope(kind: type[Envelope], job: Job, event: JobEvent) -> Envelope:
    """An envelope of type ``kind`` (job_id + oneof event) carrying one event of ``job``."""
    name, message = _event(job, event)
    envelope = kind(job_id=job.id)
    getattr(envelope, name).CopyFrom(message)
    return envelope


def _event(job: Job, event: JobEvent) -> tuple[str, Message]:
    """The envelope's oneof member for ``event``: its field name and message."""
    if isinstance(event, Queued):
        return "queued", pb.QueuedEvent(
            position=event.position,
            estimated_wait=duration(event.estimated_wait_s),
            cold_start=event.cold_start,
        )
    if isinstance(event, Started):
        return "started", pb.StartedEvent(
            replica_id=event.replica_id, device=device(event.device), batch_size=event.batch_size
        )
    if isinstance(event, StepProgress):
        return "progress", progress(event)
    if isinstance(event, StepPreview):
        return "preview", pb.PreviewEvent(
            step=event.step, images=[image(item) for item in event.images]
        )
    return "result", result(event, job.spec)


def progress(event: StepProgress) -> pb.ProgressEvent:
    return pb.ProgressEvent(
        step=event.step,
        total_steps=event.total_steps,
        elapsed=duration(event.elapsed_s),
        estimated_remaining=duration(event.remaining_s),
        steps_per_second=event.steps_per_second,
    )


def priority(value: int) -> pb.Priority:
    """The scheduler's integer priority as the API's enum (below 0 low, above 0 high)."""
    if value < 0:
        return pb.PRIORITY_LOW
    return pb.PRIORITY_HIGH if value > 0 else pb.PRIORITY_NORMAL


def job(record: Job, output: GenerationOutput | None = None) -> jobs_pb.Job:
    """A job's record: state, resolved parameters, times, last step, and result or error.

    ``output`` replaces the job's own result (the server passes it with the output store's
    URLs filled in)."""
    message = jobs_pb.Job(
        id=record.id,
        state=_JOB_STATES[record.state],
        parameters=parameters(record.spec),
        priority=priority(record.priority),
        create_time=timestamp(record.submitted_at),
        cancel_requested=record.cancel_requested,
    )
    if record.started_at is not None:
        message.start_time.CopyFrom(timestamp(record.started_at))
    if record.finished_at is not None:
        message.end_time.CopyFrom(timestamp(record.finished_at))
    last_step = next(
        (event for event in reversed(record.history) if isinstance(event, StepProgress)), None
    )
    if last_step is not None:
        message.progress.CopyFrom(progress(last_step))
    output = output or record.result
    if output is not None:
        message.result.CopyFrom(result(output, record.spec))
    elif record.error is not None:
        message.error.CopyFrom(errors.rich_status(record.error))
    return message


def server_status(status: SchedulerStatus) -> status_pb.GetServerStatusResponse:
    """The scheduler's snapshot: devices, replicas, model queues, draining."""
    return status_pb.GetServerStatusResponse(
        devices=[device_status(item) for item in status.devices],
        replicas=[replica_status(item) for item in status.replicas],
        models=[model_queue_status(item) for item in status.models],
        draining=status.draining,
    )


def device_status(snapshot: DeviceSnapshot) -> status_pb.DeviceStatus:
    message = status_pb.DeviceStatus(
        id=snapshot.id,
        kind=_DEVICE_KINDS.get(snapshot.kind, pb.DEVICE_KIND_UNSPECIFIED),
        name=snapshot.name,
        total_bytes=snapshot.total_bytes,
        free_bytes=snapshot.free_bytes,
        used_bytes=snapshot.used_bytes,
        processes=[
            status_pb.DeviceProcess(pid=process.pid, used_bytes=process.used_bytes)
            for process in snapshot.processes
        ],
    )
    if snapshot.compute_capability is not None:
        major, minor = snapshot.compute_capability
        message.compute_capability.CopyFrom(status_pb.ComputeCapability(major=major, minor=minor))
    if snapshot.utilization_percent is not None:
        message.utilization_percent = snapshot.utilization_percent
    return message


def replica_status(replica: ReplicaStatus) -> status_pb.ReplicaStatus:
    message = status_pb.ReplicaStatus(
        id=replica.id,
        model=replica.model,
        device_id=replica.device_id,
        state=_REPLICA_STATES.get(replica.state, status_pb.REPLICA_STATE_UNSPECIFIED),
        memory_bytes=replica.memory_bytes,
        running_jobs=replica.running_jobs,
    )
    if replica.pid is not None:
        message.pid = replica.pid
    return message


def model_queue_status(model: ModelQueueStatus) -> status_pb.ModelQueueStatus:
    message = status_pb.ModelQueueStatus(
        model=model.model,
        queued_jobs=model.queued_jobs,
        running_jobs=model.running_jobs,
        replicas=model.replicas,
        footprint_measured=model.footprint_measured,
    )
    if model.footprint_bytes is not None:
        message.footprint_bytes = model.footprint_bytes
    return message


def model_info(status: ModelStatus) -> pb.ModelInfo:
    config = status.config
    loaded = status.loaded
    kinds = [loaded.device.kind] if loaded else _configured_kinds(config.device)
    return pb.ModelInfo(
        id=config.id,
        source=config.source,
        precision_policy=config.precision.value,
        precisions=[precision(item) for item in loaded.precisions] if loaded else [],
        precision_reason=loaded.precision_reason if loaded else "",
        device_kinds=[_DEVICE_KINDS[kind] for kind in kinds if kind in _DEVICE_KINDS],
        limits=pb.ModelLimits(
            max_width=config.limits.max_width,
            max_height=config.limits.max_height,
            max_steps=config.limits.max_steps,
            max_images=config.limits.max_images,
            max_prompt_chars=config.limits.max_prompt_chars,
            max_pixel_steps=config.limits.max_pixel_steps,
            max_request_bytes=config.limits.max_request_bytes,
        ),
        defaults=pb.ModelDefaults(
            width=config.defaults.width,
            height=config.defaults.height,
            steps=config.defaults.steps,
            guidance_scale=config.defaults.guidance_scale,
        ),
        ready=status.ready,
    )


def _configured_kinds(device_setting: str) -> list[str]:
    if device_setting == "auto":
        return ["cpu", "cuda"]
    return [device_setting.split(":", 1)[0]]


# Requests to the scheduler's terms


def scheduling_priority(value: int) -> int:
    """The request's ``priority`` as the scheduler's integer; INVALID_ARGUMENT when unknown."""
    known = SCHEDULING_PRIORITIES.get(value)
    if known is None:
        raise InvalidRequestError(
            [FieldViolation("priority", f"unknown priority {value}; use LOW, NORMAL or HIGH")]
        )
    return known


def caller(context: grpc.aio.ServicerContext) -> str:
    """Who is calling, the key of the scheduler's fairness and the per-caller limits: the API
    key's name, else the client's IP (``server.caller_identity``)."""
    return caller_of(context)
