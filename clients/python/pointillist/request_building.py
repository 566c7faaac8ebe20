"""Request building: keyword parameters -> pointillist.v1 request messages.

Shared by Client and AsyncClient (and the CLI, through them). Image inputs (paths, bytes, PIL
images, job references) become ``InputImage`` messages in :mod:`pointillist.image_inputs`;
responses become typed values in :mod:`pointillist.conversion`.
"""

from __future__ import annotations

from typing import TypedDict

from pointillist.image_inputs import ImageSource, input_image
from pointillist.jobs import Priority
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2

__all__ = [
    "OUTPUT_FORMATS",
    "PRIORITIES",
    "GenerationOptions",
    "build_parameters",
    "generate_request",
    "priority_to_proto",
    "stream_request",
    "submit_request",
]

OUTPUT_FORMATS: dict[str, pb.ImageFormat] = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}
"""Accepted ``output_format`` names (case-insensitive) and their wire values."""

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1

PRIORITIES: dict[Priority, pb.Priority] = {
    Priority.LOW: pb.PRIORITY_LOW,
    Priority.NORMAL: pb.PRIORITY_NORMAL,
    Priority.HIGH: pb.PRIORITY_HIGH,
}
"""The wire value of each priority."""


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
        return PRIORITIES[Priority(priority.lower())]
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
