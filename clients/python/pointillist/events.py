"""Typed values of the pointillist API: generation events, images, models.

These are plain frozen dataclasses, free of protobuf, so callers never touch generated code.
``pointillist.conversion`` is the one place that turns proto messages into them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "ComponentPrecision",
    "Device",
    "DeviceKind",
    "Event",
    "GenerationMode",
    "Image",
    "ModelDefaults",
    "ModelInfo",
    "ModelLimits",
    "ModelList",
    "Precision",
    "Preview",
    "Progress",
    "Queued",
    "Reproducibility",
    "Result",
    "Started",
    "Timings",
]


class DeviceKind(enum.StrEnum):
    """The kind of device a replica runs on."""

    UNSPECIFIED = "unspecified"
    CPU = "cpu"
    CUDA = "cuda"


class GenerationMode(enum.StrEnum):
    """What a result was made from: a prompt alone, an init image, or an init image and a mask."""

    UNSPECIFIED = "unspecified"
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_IMAGE = "image_to_image"
    INPAINTING = "inpainting"


class Precision(enum.StrEnum):
    """The number format of a component's weights or arithmetic."""

    UNSPECIFIED = "unspecified"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8_E4M3 = "fp8_e4m3"


@dataclass(frozen=True)
class Device:
    """A device: its kind, a stable id (GPU UUID or ``"cpu"``) and a readable name."""

    kind: DeviceKind
    id: str
    name: str


@dataclass(frozen=True)
class Image:
    """One encoded image (PNG, JPEG or WebP bytes) and the seed that produced it."""

    data: bytes = field(repr=False)
    mime_type: str
    width: int
    height: int
    seed: int
    # Where the server's output store keeps the image (file:// or s3://); "" when it has none.
    # When the server returns URLs only, ``data`` is empty.
    url: str = ""

    @property
    def extension(self) -> str:
        """File extension matching ``mime_type``, with the dot (``".png"``)."""
        return _EXTENSIONS.get(self.mime_type, ".bin")

    def save(self, path: str | Path) -> Path:
        """Write the encoded bytes to ``path`` as they are and return the path."""
        target = Path(path)
        target.write_bytes(self.data)
        return target


_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


@dataclass(frozen=True)
class Timings:
    """Where a generation's wall-clock time went, in seconds."""

    queue_wait_s: float
    text_encoding_s: float
    denoising_s: float
    decoding_s: float
    image_encoding_s: float
    total_s: float
    # True when the replica took the prompt embeddings from its cache (no text encoder ran).
    text_encoding_cached: bool = False


@dataclass(frozen=True)
class ComponentPrecision:
    """The precision one pipeline component (transformer, text_encoder, vae...) runs in."""

    component: str
    weights: Precision
    compute: Precision


@dataclass(frozen=True)
class Reproducibility:
    """Everything that produced a result: model, weights, precisions, scheduler, versions, and
    for image-to-image and inpainting the mode, the strength and the inputs' hashes.

    The input images themselves are not repeated: ``init_image_sha256`` is the SHA-256 (hex) of
    the init image's decoded RGB pixels, ``mask_sha256`` of the mask's grey pixels, None when
    the request had none (``hashlib.sha256(pil_image.convert("RGB").tobytes())`` checks one,
    after EXIF orientation).
    """

    model_id: str
    weights_revision: str
    precisions: list[ComponentPrecision]
    scheduler: str
    library_versions: dict[str, str]
    device: Device
    mode: GenerationMode = GenerationMode.UNSPECIFIED
    # The strength that ran (image modes only; None for text-to-image).
    strength: float | None = None
    init_image_sha256: str | None = None
    mask_sha256: str | None = None


@dataclass(frozen=True)
class Queued:
    """The job was accepted and waits for a replica (``position`` 0 = next)."""

    job_id: str
    position: int
    estimated_wait_s: float | None
    # No replica was running: the wait includes starting one (a model that scales from zero).
    cold_start: bool = False


@dataclass(frozen=True)
class Started:
    """A replica started the job."""

    job_id: str
    replica_id: str
    device: Device
    batch_size: int


@dataclass(frozen=True)
class Progress:
    """One denoising step finished (``step`` is 1-based)."""

    job_id: str
    step: int
    total_steps: int
    elapsed_s: float
    remaining_s: float | None
    steps_per_second: float


@dataclass(frozen=True)
class Preview:
    """Cheap previews of the current latents, one per requested image."""

    job_id: str
    step: int
    images: list[Image]


@dataclass(frozen=True)
class Result:
    """The final result of a generation; the last event of a successful stream."""

    job_id: str
    images: list[Image]
    timings: Timings
    reproducibility: Reproducibility
    # True when the server answered from its result cache: no replica ran (an earlier request
    # with the same parameters and explicit seed made these images).
    cached: bool = False

    @property
    def seeds(self) -> list[int]:
        """The seed of each image, in image order."""
        return [image.seed for image in self.images]


Event: TypeAlias = Queued | Started | Progress | Preview | Result
"""One event of a generation stream."""


@dataclass(frozen=True)
class ModelLimits:
    """The largest request a model accepts."""

    max_width: int
    max_height: int
    max_steps: int
    max_images: int
    max_prompt_chars: int
    # width x height x steps x images per request at most (0: a server without this limit).
    max_pixel_steps: int = 0


@dataclass(frozen=True)
class ModelDefaults:
    """The values a model uses for zero or absent request fields."""

    width: int
    height: int
    steps: int
    guidance_scale: float


@dataclass(frozen=True)
class ModelInfo:
    """One served model: where it comes from, its precision, limits, defaults and readiness."""

    id: str
    source: str
    precision_policy: str
    precisions: list[ComponentPrecision]
    precision_reason: str
    device_kinds: list[DeviceKind]
    limits: ModelLimits
    defaults: ModelDefaults
    ready: bool


@dataclass(frozen=True)
class ModelList:
    """The models a server serves and the one it uses when a request names none."""

    models: list[ModelInfo]
    default_model: str

    def get(self, model_id: str) -> ModelInfo | None:
        """The model with this id, or None."""
        return next((model for model in self.models if model.id == model_id), None)
