"""Turns request parameters into a GenerationSpec, or lists every field that is wrong."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from engine.config import ModelConfig, OtherSizes
from engine.job import GenerationSpec, ImageFormat, PreviewSettings
from pointillist.v1 import generation_pb2 as pb
from scheduler.errors import UnknownModelError

MIN_SIDE = 64
SIDE_MULTIPLE = 16
MAX_GUIDANCE = 30.0
DEFAULT_QUALITY = 90
DEFAULT_PREVIEW_SIZE = 256
PREVIEW_SIZE_RANGE = (16, 1024)
# Image i uses seed + i, and torch seeds are unsigned 64-bit: the last image's seed must fit.
MAX_SEED = 2**64 - 1
# Model ids are short names; a longer one is refused before it is looked up (and echoed back).
MAX_MODEL_ID_CHARS = 128

IMAGE_FORMATS = {
    pb.IMAGE_FORMAT_UNSPECIFIED: ImageFormat.PNG,
    pb.IMAGE_FORMAT_PNG: ImageFormat.PNG,
    pb.IMAGE_FORMAT_JPEG: ImageFormat.JPEG,
    pb.IMAGE_FORMAT_WEBP: ImageFormat.WEBP,
}


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request and what is wrong with it."""

    field: str
    description: str


class RequestTooLargeError(Exception):
    """The request message is larger than its model's ``max_request_bytes``."""

    def __init__(self, size: int, limit: int, model_id: str) -> None:
        super().__init__(
            f"the request is {size:,} bytes; model {model_id!r} accepts at most {limit:,} "
            "(max_request_bytes)"
        )
        self.size = size
        self.limit = limit


class InvalidRequestError(Exception):
    """The request has bad fields; every one of them is listed."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


def resolve_parameters(
    params: pb.GenerationParameters,
    models: Mapping[str, ModelConfig],
    default_model: str,
    prefix: str = "parameters.",
    image_size: tuple[int, int] | None = None,
) -> GenerationSpec:
    """Apply the model's defaults and limits; raise UnknownModelError or InvalidRequestError.

    ``image_size`` is the init image's (``server.image_input``): the output's size, in place
    of the model's default size."""
    if len(params.model) > MAX_MODEL_ID_CHARS:
        raise InvalidRequestError(
            [
                FieldViolation(
                    prefix + "model",
                    f"is {len(params.model)} characters; model ids are at most "
                    f"{MAX_MODEL_ID_CHARS}",
                )
            ]
        )
    model_id = params.model or default_model
    model = models.get(model_id)
    if model is None:
        raise UnknownModelError(model_id, list(models))
    limits, defaults = model.limits, model.defaults
    bad: list[FieldViolation] = []

    def check(ok: bool, name: str, description: str) -> None:
        # An empty name is the parameters message itself: a limit on several fields together.
        if not ok:
            bad.append(FieldViolation(prefix + name if name else prefix.rstrip("."), description))

    check(bool(params.prompt.strip()), "prompt", "must not be empty")
    for name in ("prompt", "negative_prompt"):
        length = len(getattr(params, name))
        check(
            length <= limits.max_prompt_chars,
            name,
            f"is {length} characters; the limit is {limits.max_prompt_chars}",
        )
    default_width, default_height = image_size or (defaults.width, defaults.height)
    width = params.width or default_width
    height = params.height or default_height
    for name, value, largest in (
        ("width", width, limits.max_width),
        ("height", height, limits.max_height),
    ):
        check(
            value % SIDE_MULTIPLE == 0,
            name,
            f"must be a multiple of {SIDE_MULTIPLE}, got {value}",
        )
        check(
            MIN_SIDE <= value <= largest,
            name,
            f"must be between {MIN_SIDE} and {largest} for model {model_id!r}, got {value}",
        )
    compiled = model.compiled_sizes()
    check(
        not compiled
        or model.compile_other_sizes is not OtherSizes.REFUSE
        or (width, height) in compiled,
        "",
        f"model {model_id!r} serves only the sizes its transformer is compiled for "
        f"({', '.join(f'{w}x{h}' for w, h in compiled)}), got {width}x{height}",
    )
    steps = params.steps or defaults.steps
    check(
        steps <= limits.max_steps,
        "steps",
        f"must be between 1 and {limits.max_steps}, got {steps}",
    )
    guidance = (
        params.guidance_scale if params.HasField("guidance_scale") else defaults.guidance_scale
    )
    check(
        math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE,
        "guidance_scale",
        f"must be between 0 and {MAX_GUIDANCE:g}, got {guidance}",
    )
    num_images = params.num_images or 1
    check(
        num_images <= limits.max_images,
        "num_images",
        f"must be between 1 and {limits.max_images}, got {num_images}",
    )
    if params.HasField("seed"):
        last_seed = params.seed + max(1, min(num_images, limits.max_images)) - 1
        check(
            last_seed <= MAX_SEED,
            "seed",
            f"must be at most 2^64 - num_images (image i uses seed + i), got {params.seed}",
        )
    size_fields = {prefix + name for name in ("width", "height", "steps", "num_images")}
    if not any(violation.field in size_fields for violation in bad):
        # Only when every size field is in bounds: otherwise the budget repeats their errors.
        work = width * height * steps * num_images
        check(
            work <= limits.max_pixel_steps,
            "",
            f"width x height x steps x num_images is {work:,}; model {model_id!r} allows at "
            f"most {limits.max_pixel_steps:,} per request (lower the size, steps or images)",
        )
    image_format = IMAGE_FORMATS.get(params.output_format)
    check(
        image_format is not None,
        "output_format",
        f"unknown format {params.output_format}; use PNG, JPEG or WEBP",
    )
    quality = params.quality or DEFAULT_QUALITY
    check(1 <= quality <= 100, "quality", f"must be between 1 and 100, got {quality}")
    preview_every = params.preview.every_n_steps
    check(
        preview_every <= limits.max_steps,
        "preview.every_n_steps",
        f"must be at most {limits.max_steps}, got {preview_every}",
    )
    preview_size = params.preview.max_size or DEFAULT_PREVIEW_SIZE
    low, high = PREVIEW_SIZE_RANGE
    check(
        low <= preview_size <= high,
        "preview.max_size",
        f"must be between {low} and {high}, got {preview_size}",
    )
    if bad:
        raise InvalidRequestError(bad)
    assert image_format is not None
    return GenerationSpec(
        model=model_id,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=float(guidance),
        # An absent seed gets a random 32-bit one; the result reports it so the image can be redone.
        seed=params.seed if params.HasField("seed") else secrets.randbelow(2**32),
        num_images=num_images,
        output_format=image_format,
        quality=quality,
        preview=PreviewSettings(every_n_steps=preview_every, max_size=preview_size),
    )
