"""Conversion between pointillist.v1 proto messages and the client's typed values.

The one place that knows the wire format: request building from keyword parameters (shared by
Client and AsyncClient) and proto -> :mod:`pointillist.events` for every response.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

from google.protobuf import duration_pb2, timestamp_pb2

from pointillist.errors import error_from_status
from pointillist.events import (
    ComponentPrecision,
    Device,
    DeviceKind,
    Event,
    Image,
    ModelDefaults,
    ModelInfo,
    ModelLimits,
    ModelList,
    Precision,
    Preview,
    Progress,
    Queued,
    Reproducibility,
    Result,
    Started,
    Timings,
)
from pointillist.image_inputs import ImageSource, input_image
from pointillist.jobs import GenerationParameters, JobInfo, JobState, Priority
from pointillist.server_status import (
    DeviceProcess,
    DeviceStatus,
    ModelQueueStatus,
    ReplicaState,
    ReplicaStatus,
    ServerStatus,
)
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2, status_pb2

__all__ = [
    "OUTPUT_FORMATS",
    "build_parameters",
    "event_from_proto",
    "generate_request",
    "job_from_proto",
    "model_list_from_proto",
    "parameters_from_proto",
    "priority_to_proto",
    "result_from_proto",
    "server_status_from_proto",
    "stream_request",
    "submit_request",
]

EventEnvelope = pb.StreamGenerateResponse | jobs_pb2.WatchJobResponse
"""A message carrying one generation event: StreamGenerate's or WatchJob's (same fields)."""

OUTPUT_FORMATS: dict[str, pb.ImageFormat] = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}
"""Accepted ``output_format`` names (case-insensitive) and their wire values."""

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1

_DEVICE_KINDS = {
    pb.DEVICE_KIND_CPU: DeviceKind.CPU,
    pb.DEVICE_KIND_CUDA: DeviceKind.CUDA,
}
_PRECISIONS = {
    pb.PRECISION_FP32: Precision.FP32,
    pb.PRECISION_FP16: Precision.FP16,
    pb.PRECISION_BF16: Precision.BF16,
    pb.PRECISION_FP8_E4M3: Precision.FP8_E4M3,
}
_PRIORITIES = {
    Priority.LOW: pb.PRIORITY_LOW,
    Priority.NORMAL: pb.PRIORITY_NORMAL,
    Priority.HIGH: pb.PRIORITY_HIGH,
}
_PRIORITY_NAMES = {value: name for name, value in _PRIORITIES.items()}
_FORMAT_NAMES = {
    pb.IMAGE_FORMAT_UNSPECIFIED: "png",
    pb.IMAGE_FORMAT_PNG: "png",
    pb.IMAGE_FORMAT_JPEG: "jpeg",
    pb.IMAGE_FORMAT_WEBP: "webp",
}
_JOB_STATES = {
    jobs_pb2.JOB_STATE_QUEUED: JobState.QUEUED,
    jobs_pb2.JOB_STATE_RUNNING: JobState.RUNNING,
    jobs_pb2.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    jobs_pb2.JOB_STATE_FAILED: JobState.FAILED,
    jobs_pb2.JOB_STATE_CANCELLED: JobState.CANCELLED,
}
_REPLICA_STATES = {
    status_pb2.REPLICA_STATE_STARTING: ReplicaState.STARTING,
    status_pb2.REPLICA_STATE_LOADING: ReplicaState.LOADING,
    status_pb2.REPLICA_STATE_WARMING: ReplicaState.WARMING,
    status_pb2.REPLICA_STATE_READY: ReplicaState.READY,
    status_pb2.REPLICA_STATE_BUSY: ReplicaState.BUSY,
    status_pb2.REPLICA_STATE_DRAINING: ReplicaState.DRAINING,
    status_pb2.REPLICA_STATE_STOPPED: ReplicaState.STOPPED,
    status_pb2.REPLICA_STATE_FAILED: ReplicaState.FAILED,
}


class GenerationOptions(TypedDict, total=False):
    """The generation keywords of ``generate``, ``stream`` and ``submit`` (and the CLI): each
    is a keyword of :func:`build_parameters`, with the same default when left out."""

    model: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float | None
    seed: int | None
    num_images: int
    output_format: str
    quality: int
    preview_every: int
    preview_size: int
    image: ImageSource | None
    strength: float | None
    mask: ImageSource | None


def build_parameters(
    prompt: str,
    *,
    model: str = "",
    negative_prompt: str = "",
    width: int = 0,
    height: int = 0,
    steps: int = 0,
    guidance_scale: float | None = None,
    seed: int | None = None,
    num_images: int = 1,
    output_format: str = "png",
    quality: int = 0,
    preview_every: int = 0,
    preview_size: int = 0,
    image: ImageSource | None = None,
    strength: float | None = None,
    mask: ImageSource | None = None,
) -> pb.GenerationParameters:
    """Build ``GenerationParameters``; zero / None means the model's default.

    Raises ValueError for values the wire cannot carry (negative sizes, unknown formats). Whether
    a value is acceptable for the model (multiple of 16, within the limits) is the server's call.
    """
    format_value = OUTPUT_FORMATS.get(output_format.lower())
    if format_value is None:
        raise ValueError(f"output_format must be one of png, jpeg, webp; got {output_format!r}")
    counts = {
        "width": width,
        "height": height,
        "steps": steps,
        "num_images": num_images,
        "quality": quality,
        "preview_every": preview_every,
        "preview_size": preview_size,
    }
    for name, value in counts.items():
        if not 0 <= value <= _UINT32_MAX:
            raise ValueError(f"{name} must be a non-negative integer; got {value}")
    if seed is not None and not 0 <= seed <= _UINT64_MAX:
        raise ValueError(f"seed must be between 0 and 2**64 - 1; got {seed}")
    parameters = pb.GenerationParameters(
        model=model,
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        steps=steps,
        num_images=num_images,
        output_format=format_value,
        quality=quality,
    )
    # Optional fields: set only when given, so that "absent" reaches the server as absent.
    if guidance_scale is not None:
        parameters.guidance_scale = guidance_scale
    if seed is not None:
        parameters.seed = seed
    if preview_every:
        parameters.preview.CopyFrom(
            pb.PreviewOptions(every_n_steps=preview_every, max_size=preview_size)
        )
    # Image-to-image (image), inpainting (image and mask): pointillist.image_inputs.
    if image is not None:
        parameters.init_image.CopyFrom(input_image(image, "image"))
    if mask is not None:
        parameters.mask.CopyFrom(input_image(mask, "mask"))
    if strength is not None:
        parameters.strength = strength
    return parameters


def priority_to_proto(priority: Priority | str | None) -> pb.Priority:
    """The wire value of a priority: ``Priority`` or its name (``"low"``, ``"normal"``,
    ``"high"``, any case); None leaves it to the server (normal). ValueError for other names."""
    if priority is None:
        return pb.PRIORITY_UNSPECIFIED
    try:
        return _PRIORITIES[Priority(priority.lower())]
    except ValueError:
        raise ValueError(f"priority must be one of low, normal, high; got {priority!r}") from None


def generate_request(
    parameters: pb.GenerationParameters, priority: pb.Priority = pb.PRIORITY_UNSPECIFIED
) -> pb.GenerateRequest:
    """The Generate request for these parameters."""
    return pb.GenerateRequest(parameters=parameters, priority=priority)


def stream_request(
    parameters: pb.GenerationParameters, priority: pb.Priority = pb.PRIORITY_UNSPECIFIED
) -> pb.StreamGenerateRequest:
    """The StreamGenerate request for these parameters."""
    return pb.StreamGenerateRequest(parameters=parameters, priority=priority)


def submit_request(
    parameters: pb.GenerationParameters, priority: pb.Priority = pb.PRIORITY_UNSPECIFIED
) -> jobs_pb2.SubmitJobRequest:
    """The SubmitJob request for these parameters."""
    return jobs_pb2.SubmitJobRequest(parameters=parameters, priority=priority)


def event_from_proto(response: EventEnvelope) -> Event | None:
    """The typed event of one StreamGenerate or WatchJob response; None for an event this client
    does not know.

    Unknown events come from a newer server (a new ``oneof`` member) and are skipped by streams.
    """
    job_id = response.job_id
    which = response.WhichOneof("event")
    if which == "queued":
        queued = response.queued
        return Queued(
            job_id=job_id,
            position=queued.position,
            estimated_wait_s=(
                _seconds(queued.estimated_wait) if queued.HasField("estimated_wait") else None
            ),
            cold_start=queued.cold_start,
        )
    if which == "started":
        started = response.started
        return Started(
            job_id=job_id,
            replica_id=started.replica_id,
            device=device_from_proto(started.device),
            batch_size=started.batch_size,
        )
    if which == "progress":
        return progress_from_proto(job_id, response.progress)
    if which == "preview":
        preview = response.preview
        return Preview(
            job_id=job_id,
            step=preview.step,
            images=[image_from_proto(image) for image in preview.images],
        )
    if which == "result":
        return result_from_proto(job_id, response.result)
    return None


def progress_from_proto(job_id: str, progress: pb.ProgressEvent) -> Progress:
    """A typed progress event."""
    return Progress(
        job_id=job_id,
        step=progress.step,
        total_steps=progress.total_steps,
        elapsed_s=_seconds(progress.elapsed),
        remaining_s=(
            _seconds(progress.estimated_remaining)
            if progress.HasField("estimated_remaining")
            else None
        ),
        steps_per_second=_float32(progress.steps_per_second),
    )


def result_from_proto(job_id: str, result: pb.GenerationResult) -> Result:
    """The typed result of a generation."""
    timings = result.timings
    return Result(
        job_id=job_id,
        images=[image_from_proto(image) for image in result.images],
        timings=Timings(
            queue_wait_s=_seconds(timings.queue_wait),
            text_encoding_s=_seconds(timings.text_encoding),
            denoising_s=_seconds(timings.denoising),
            decoding_s=_seconds(timings.decoding),
            image_encoding_s=_seconds(timings.image_encoding),
            total_s=_seconds(timings.total),
            text_encoding_cached=timings.text_encoding_cached,
        ),
        reproducibility=reproducibility_from_proto(result.reproducibility),
        cached=result.cached,
    )


def image_from_proto(image: pb.Image) -> Image:
    """A typed image (the bytes are shared, not copied)."""
    return Image(
        data=image.data,
        mime_type=image.mime_type,
        width=image.width,
        height=image.height,
        seed=image.seed,
        url=image.url,
    )


def device_from_proto(device: pb.Device) -> Device:
    """A typed device."""
    return Device(
        kind=_DEVICE_KINDS.get(device.kind, DeviceKind.UNSPECIFIED),
        id=device.id,
        name=device.name,
    )


def reproducibility_from_proto(record: pb.Reproducibility) -> Reproducibility:
    """A typed reproducibility record."""
    return Reproducibility(
        model_id=record.model_id,
        weights_revision=record.weights_revision,
        precisions=[precision_from_proto(p) for p in record.precisions],
        scheduler=record.scheduler,
        library_versions=dict(record.library_versions),
        device=device_from_proto(record.device),
    )


def precision_from_proto(precision: pb.ComponentPrecision) -> ComponentPrecision:
    """A typed component precision."""
    return ComponentPrecision(
        component=precision.component,
        weights=_PRECISIONS.get(precision.weights, Precision.UNSPECIFIED),
        compute=_PRECISIONS.get(precision.compute, Precision.UNSPECIFIED),
    )


def model_from_proto(model: pb.ModelInfo) -> ModelInfo:
    """A typed model description."""
    return ModelInfo(
        id=model.id,
        source=model.source,
        precision_policy=model.precision_policy,
        precisions=[precision_from_proto(p) for p in model.precisions],
        precision_reason=model.precision_reason,
        device_kinds=[
            _DEVICE_KINDS.get(kind, DeviceKind.UNSPECIFIED) for kind in model.device_kinds
        ],
        limits=ModelLimits(
            max_width=model.limits.max_width,
            max_height=model.limits.max_height,
            max_steps=model.limits.max_steps,
            max_images=model.limits.max_images,
            max_prompt_chars=model.limits.max_prompt_chars,
            max_pixel_steps=model.limits.max_pixel_steps,
        ),
        defaults=ModelDefaults(
            width=model.defaults.width,
            height=model.defaults.height,
            steps=model.defaults.steps,
            guidance_scale=_float32(model.defaults.guidance_scale),
        ),
        ready=model.ready,
    )


def model_list_from_proto(response: pb.ListModelsResponse) -> ModelList:
    """The typed ListModels response."""
    return ModelList(
        models=[model_from_proto(model) for model in response.models],
        default_model=response.default_model,
    )


def parameters_from_proto(parameters: pb.GenerationParameters) -> GenerationParameters:
    """Typed generation parameters (absent optional values stay None)."""
    return GenerationParameters(
        model=parameters.model,
        prompt=parameters.prompt,
        negative_prompt=parameters.negative_prompt,
        width=parameters.width,
        height=parameters.height,
        steps=parameters.steps,
        guidance_scale=(
            parameters.guidance_scale if parameters.HasField("guidance_scale") else None
        ),
        seed=parameters.seed if parameters.HasField("seed") else None,
        num_images=parameters.num_images,
        output_format=_FORMAT_NAMES.get(parameters.output_format, "png"),
        quality=parameters.quality,
        preview_every=parameters.preview.every_n_steps,
        preview_size=parameters.preview.max_size,
    )


def job_from_proto(job: jobs_pb2.Job) -> JobInfo:
    """A typed job record; its ``error`` is the exception a watch of the job ends with."""
    outcome = job.WhichOneof("outcome")
    return JobInfo(
        id=job.id,
        state=_JOB_STATES.get(job.state, JobState.UNSPECIFIED),
        parameters=parameters_from_proto(job.parameters),
        priority=_PRIORITY_NAMES.get(job.priority, Priority.NORMAL),
        created_at=_datetime(job.create_time),
        started_at=_datetime(job.start_time) if job.HasField("start_time") else None,
        finished_at=_datetime(job.end_time) if job.HasField("end_time") else None,
        progress=progress_from_proto(job.id, job.progress) if job.HasField("progress") else None,
        cancel_requested=job.cancel_requested,
        result=result_from_proto(job.id, job.result) if outcome == "result" else None,
        error=error_from_status(job.error) if outcome == "error" else None,
    )


def server_status_from_proto(response: status_pb2.GetServerStatusResponse) -> ServerStatus:
    """The typed GetServerStatus response."""
    return ServerStatus(
        devices=[_device_status(device) for device in response.devices],
        replicas=[
            ReplicaStatus(
                id=replica.id,
                model=replica.model,
                device_id=replica.device_id,
                state=_REPLICA_STATES.get(replica.state, ReplicaState.UNSPECIFIED),
                pid=replica.pid if replica.HasField("pid") else None,
                memory_bytes=replica.memory_bytes,
                running_jobs=replica.running_jobs,
            )
            for replica in response.replicas
        ],
        models=[
            ModelQueueStatus(
                model=model.model,
                queued_jobs=model.queued_jobs,
                running_jobs=model.running_jobs,
                replicas=model.replicas,
                footprint_bytes=(
                    model.footprint_bytes if model.HasField("footprint_bytes") else None
                ),
                footprint_measured=model.footprint_measured,
            )
            for model in response.models
        ],
        draining=response.draining,
    )


def _device_status(device: status_pb2.DeviceStatus) -> DeviceStatus:
    capability = device.compute_capability
    return DeviceStatus(
        id=device.id,
        kind=_DEVICE_KINDS.get(device.kind, DeviceKind.UNSPECIFIED),
        name=device.name,
        total_bytes=device.total_bytes,
        free_bytes=device.free_bytes,
        used_bytes=device.used_bytes,
        compute_capability=(
            (capability.major, capability.minor) if device.HasField("compute_capability") else None
        ),
        utilization_percent=(
            device.utilization_percent if device.HasField("utilization_percent") else None
        ),
        processes=[
            DeviceProcess(pid=process.pid, used_bytes=process.used_bytes)
            for process in device.processes
        ],
    )


def _datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    return datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9, tz=UTC)


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _float32(value: float) -> float:
    # float fields travel as float32: 7.2 arrives as 7.199999809265137. Seven significant
    # digits give back the value the server meant.
    return float(f"{value:.7g}")
