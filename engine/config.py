"""How a model is configured: weights source, precision policy, limits and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from engine.job import GenerationSpec


class PrecisionPolicy(StrEnum):
    """The precision asked for in the configuration.

    ``fp8`` stores the transformer (and T5-XXL when present) in FP8 with torchao (W8A8 where the
    GPU has FP8 tensor cores, weight-only elsewhere) and keeps CLIP and the VAE 16-bit;
    ``auto`` picks fp8 on CUDA and the device's 16-bit type elsewhere.
    """

    AUTO = "auto"
    FP8 = "fp8"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class OtherSizes(StrEnum):
    """What a compiled model does with a request of a size it has no compiled graph for."""

    UNCOMPILED = "uncompiled"  # run it on the eager transformer
    REFUSE = "refuse"  # INVALID_ARGUMENT, naming the compiled sizes (server.validation)


@dataclass(frozen=True)
class ModelLimits:
    """The largest request a model accepts."""

    max_width: int = 1024
    max_height: int = 1024
    max_steps: int = 100
    max_images: int = 4
    max_prompt_chars: int = 2000
    # The per-request budget: width x height x steps x images. The largest of every field at
    # once is more work than one caller should hold a replica for; this bounds the product.
    # Four 1024x1024 images at 50 steps.
    max_pixel_steps: int = 1024 * 1024 * 50 * 4
    # The largest request message, uploaded images included: a 1024x1024 PNG of noise (the
    # worst case, incompressible) is about 3.1 MiB, so 8 MiB holds an image and its mask.
    max_request_bytes: int = 8 << 20


@dataclass(frozen=True)
class ModelDefaults:
    """Values used for fields a request leaves at zero or absent."""

    width: int = 1024
    height: int = 1024
    steps: int = 28
    guidance_scale: float = 4.5


DEMO_SOURCE = "demo"
DEFAULT_EMBEDDING_CACHE_BYTES = 256 << 20
"""Bytes of text-encoder outputs a replica keeps (``engine.embedding_cache``) by default."""


@dataclass(frozen=True)
class ModelConfig:
    """One served model.

    ``source`` is ``"demo"`` (the built-in tiny random SD3 pipeline), a local diffusers folder
    (what ``save_pretrained`` or a hub snapshot writes, or a folder from ``pointillist quantize``),
    or a hub id such as ``stabilityai/stable-diffusion-3.5-medium`` (needs a network).
    ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    id: str
    source: str = DEMO_SOURCE
    precision: PrecisionPolicy = PrecisionPolicy.AUTO
    device: str = "auto"
    revision: str | None = None
    limits: ModelLimits = field(default_factory=ModelLimits)
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    # Replicas kept warm at all times, and the most ever started (None: as many as fit).
    min_replicas: int = 1
    max_replicas: int | None = None
    # Bytes of prompt embeddings each replica keeps on the CPU (0 turns the cache off).
    embedding_cache_bytes: int = DEFAULT_EMBEDDING_CACHE_BYTES
    # The transformer under torch.compile (engine.compiled): one graph per (width, height) in
    # compile_sizes (empty: the default size), compiled at warm-up; other sizes run eager or
    # are refused, as compile_other_sizes says.
    compile: bool = False
    compile_sizes: tuple[tuple[int, int], ...] = ()
    compile_other_sizes: OtherSizes = OtherSizes.UNCOMPILED

    def compiled_sizes(self) -> tuple[tuple[int, int], ...]:
        """The (width, height) pairs the transformer is compiled for; none without compile."""
        if not self.compile:
            return ()
        return self.compile_sizes or ((self.defaults.width, self.defaults.height),)

    def largest_request(self, steps: int = 2) -> GenerationSpec:
        """The biggest request the limits allow (a short one): warming up with it makes the
        measured memory footprint cover every request the model accepts."""
        return GenerationSpec(
            model=self.id,
            prompt="warm-up",
            negative_prompt="",
            width=self.limits.max_width,
            height=self.limits.max_height,
            steps=steps,
            guidance_scale=self.defaults.guidance_scale,
            seed=0,
            num_images=self.limits.max_images,
        )


def demo_model_config(model_id: str = "demo") -> ModelConfig:
    """The built-in demo model: real SD3 pipeline classes, tiny random weights, runs on a CPU."""
    return ModelConfig(
        id=model_id,
        source=DEMO_SOURCE,
        precision=PrecisionPolicy.AUTO,
        device="auto",
        limits=ModelLimits(
            max_width=512,
            max_height=512,
            max_steps=100,
            max_images=4,
            # Two 512x512 images at 100 steps: four at once at the most steps is refused.
            max_pixel_steps=512 * 512 * 100 * 2,
        ),
        defaults=ModelDefaults(width=256, height=256, steps=20, guidance_scale=4.5),
    )
