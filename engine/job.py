"""Plain data types for one generation: what is asked, the events it emits, what it returns.

These cross the process boundary between the scheduler and a worker (pickled), so they hold
only plain Python values: no torch, no protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ImageFormat(StrEnum):
    """Encoding of a returned image."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


@dataclass(frozen=True)
class PreviewSettings:
    """Preview images of the latents while denoising. ``every_n_steps == 0`` turns them off."""

    every_n_steps: int = 0
    max_size: int = 256


@dataclass(frozen=True)
class GenerationSpec:
    """A fully resolved generation request: defaults applied, seed chosen, already validated."""

    model: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    num_images: int = 1
    output_format: ImageFormat = ImageFormat.PNG
    quality: int = 90
    preview: PreviewSettings = field(default_factory=PreviewSettings)

    def image_seeds(self) -> list[int]:
        """Image i uses seed + i, wrapped to 64 bits."""
        return [(self.seed + i) % 2**64 for i in range(self.num_images)]


def batch_key(spec: GenerationSpec) -> tuple[str, int, int, int, float | None]:
    """Requests with equal keys can share one pipeline call (``Engine.generate_batch``).

    One call runs one denoising loop: one latent size, one timestep schedule (which also
    depends on the image size through the scheduler's shift) and one guidance formula, so
    model, width, height, steps and guidance must match. Everything else is per member:
    prompts, negative prompts, seeds, ``num_images``, output format and quality, previews.
    A guidance scale of 1 or less turns classifier-free guidance off and is then never used,
    so all such scales share one key (``None``).
    """
    guidance = spec.guidance_scale if spec.guidance_scale > 1.0 else None
    return (spec.model, spec.width, spec.height, spec.steps, guidance)


@dataclass(frozen=True)
class DeviceInfo:
    """A replica's device: ``kind`` is "cpu" or "cuda", ``id`` a GPU UUID or "cpu"."""

    kind: str
    id: str
    name: str


@dataclass(frozen=True)
class EncodedImage:
    """One encoded image (a result or a preview)."""

    data: bytes
    mime_type: str
    width: int
    height: int
    seed: int = 0
    # Where the server's output store put the image ("" when none did); ``data`` may then be
    # empty (the server's output_inline off). Set by the server, never by the engine.
    url: str = ""


@dataclass(frozen=True)
class StepProgress:
    """One denoising step finished. ``step`` is 1-based."""

    step: int
    total_steps: int
    elapsed_s: float
    remaining_s: float
    steps_per_second: float


@dataclass(frozen=True)
class StepPreview:
    """A cheap preview of the latents after ``step`` (1-based), one image per requested image."""

    step: int
    images: tuple[EncodedImage, ...]


@dataclass(frozen=True)
class ComponentPrecision:
    """Precision a component really runs in: "fp8_e4m3", "bf16", "fp16" or "fp32"."""

    component: str
    weights: str
    compute: str


@dataclass(frozen=True)
class Provenance:
    """What produced a result: enough to reproduce it."""

    model_id: str
    weights_revision: str
    precisions: tuple[ComponentPrecision, ...]
    scheduler: str
    library_versions: dict[str, str]
    device: DeviceInfo


@dataclass(frozen=True)
class Timings:
    """Seconds spent per phase. The engine fills the inner phases, the scheduler the outer ones."""

    queue_wait_s: float = 0.0
    text_encoding_s: float = 0.0
    denoising_s: float = 0.0
    decoding_s: float = 0.0
    image_encoding_s: float = 0.0
    total_s: float = 0.0
    # True when the prompt embeddings came from the replica's cache (``engine.embedding_cache``):
    # the text encoders did not run and ``text_encoding_s`` is the lookup alone.
    text_encoding_cached: bool = False


@dataclass(frozen=True)
class GenerationOutput:
    """The result of a finished generation."""

    images: tuple[EncodedImage, ...]
    timings: Timings
    provenance: Provenance
    # True when the result came from the result cache (``scheduler.caching_scheduler``): no
    # replica ran, and the images are those of an earlier identical request.
    cached: bool = False


@dataclass(frozen=True)
class LoadedModel:
    """What a replica reports once its model is loaded."""

    model_id: str
    precisions: tuple[ComponentPrecision, ...]
    precision_reason: str
    device: DeviceInfo
    weights_revision: str
    # Bytes the loaded weights really occupy (FP8 data and scales counted apart), over every
    # component: what a replica holds before its activations; 0 when unknown.
    weight_bytes: int = 0


class GenerationCancelled(Exception):
    """The generation stopped early because it was asked to; ``completed_steps`` ran."""

    def __init__(self, completed_steps: int) -> None:
        super().__init__(f"cancelled after {completed_steps} steps")
        self.completed_steps = completed_steps
