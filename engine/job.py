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


class GenerationMode(StrEnum):
    """What a generation starts from."""

    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_IMAGE = "image_to_image"
    INPAINTING = "inpainting"


@dataclass(frozen=True)
class InputImage:
    """Decoded pixels of a request's input image, already validated and oriented.

    ``pixels`` is row-major 8-bit RGB (an init image) or grey (a mask); ``sha256`` is the hash
    of exactly these bytes, which the result cache key and the reproducibility record use.
    """

    pixels: bytes = field(repr=False)
    width: int
    height: int
    channels: int
    sha256: str


def steps_to_run(steps: int, strength: float) -> int:
    """How many of ``steps`` really run at ``strength``: the same arithmetic as diffusers'
    SD3 image-to-image and inpainting ``get_timesteps`` (float rounding included, so that
    progress reports exactly the loop's length)."""
    init_timestep = min(steps * strength, steps)
    t_start = int(max(steps - init_timestep, 0))
    return steps - t_start


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
    # Image-to-image starts from ``init_image``; with ``mask`` too, inpainting. ``strength`` is
    # the share of the schedule re-noised and run again (1.0, and unused, for text-to-image).
    init_image: InputImage | None = None
    mask: InputImage | None = None
    strength: float = 1.0

    @property
    def mode(self) -> GenerationMode:
        if self.init_image is None:
            return GenerationMode.TEXT_TO_IMAGE
        return GenerationMode.INPAINTING if self.mask is not None else GenerationMode.IMAGE_TO_IMAGE

    @property
    def steps_run(self) -> int:
        """The denoising steps that really run (all of them for text-to-image)."""
        if self.init_image is None:
            return self.steps
        return steps_to_run(self.steps, self.strength)

    def image_seeds(self) -> list[int]:
        """Image i uses seed + i, wrapped to 64 bits."""
        return [(self.seed + i) % 2**64 for i in range(self.num_images)]


def batch_key(
    spec: GenerationSpec,
) -> tuple[str, int, int, int, float | None, GenerationMode, float]:
    """Requests with equal keys can share one pipeline call (``Engine.generate_batch``).

    One call runs one denoising loop: one latent size, one timestep schedule (which also
    depends on the image size through the scheduler's shift) and one guidance formula, so
    model, width, height, steps and guidance must match. Everything else is per member:
    prompts, negative prompts, seeds, ``num_images``, output format and quality, previews.
    A guidance scale of 1 or less turns classifier-free guidance off and is then never used,
    so all such scales share one key (``None``). The mode and the strength (which cuts the
    schedule) must match too; the input images themselves are per member.
    """
    guidance = spec.guidance_scale if spec.guidance_scale > 1.0 else None
    strength = spec.strength if spec.init_image is not None else 1.0
    return (spec.model, spec.width, spec.height, spec.steps, guidance, spec.mode, strength)


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
