"""Domain objects (engine.job, scheduler) to protobuf messages. Proto types stop at server/."""

from __future__ import annotations

from google.protobuf import duration_pb2

from engine.job import (
    ComponentPrecision,
    DeviceInfo,
    EncodedImage,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    StepPreview,
    StepProgress,
)
from pointillist.v1 import generation_pb2 as pb
from scheduler.interface import ModelStatus
from scheduler.job import Job, JobEvent, Queued, Started

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


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(max(0.0, seconds) * 1e9))
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
    )


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
        ),
        reproducibility=pb.Reproducibility(
            model_id=provenance.model_id,
            weights_revision=provenance.weights_revision,
            precisions=[precision(item) for item in provenance.precisions],
            scheduler=provenance.scheduler,
            library_versions=provenance.library_versions,
            device=device(provenance.device),
            parameters=parameters(spec),
        ),
    )


def stream_response(job: Job, event: JobEvent) -> pb.StreamGenerateResponse:
    """One stream envelope for one event of ``job``."""
    job_id = job.id
    if isinstance(event, Queued):
        return pb.StreamGenerateResponse(
            job_id=job_id,
            queued=pb.QueuedEvent(
                position=event.position, estimated_wait=duration(event.estimated_wait_s)
            ),
        )
    if isinstance(event, Started):
        return pb.StreamGenerateResponse(
            job_id=job_id,
            started=pb.StartedEvent(
                replica_id=event.replica_id,
                device=device(event.device),
                batch_size=event.batch_size,
            ),
        )
    if isinstance(event, StepProgress):
        return pb.StreamGenerateResponse(
            job_id=job_id,
            progress=pb.ProgressEvent(
                step=event.step,
                total_steps=event.total_steps,
                elapsed=duration(event.elapsed_s),
                estimated_remaining=duration(event.remaining_s),
                steps_per_second=event.steps_per_second,
            ),
        )
    if isinstance(event, StepPreview):
        return pb.StreamGenerateResponse(
            job_id=job_id,
            preview=pb.PreviewEvent(step=event.step, images=[image(item) for item in event.images]),
        )
    return pb.StreamGenerateResponse(job_id=job_id, result=result(event, job.spec))


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
