"""The engine a worker process drives: load a model once, then generate images step by step.

``generate`` runs the pipeline's phases itself (text encoding, denoising, VAE decoding, image
encoding) so each is timed, reports every denoising step through ``on_event`` and stops at the
next step end once ``should_stop`` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from PIL import Image

from engine.config import ModelConfig
from engine.image_encoding import encode_image
from engine.job import (
    EncodedImage,
    GenerationCancelled,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    LoadedModel,
    PreviewSettings,
    Provenance,
    StepPreview,
    StepProgress,
    Timings,
)
from engine.loading import ModelLoadError, load_pipeline, locate_source, resolve_device
from engine.precision import apply_plan, component_precisions, detect_capability, plan_precision
from engine.preview import flow_x0_estimate, latents_to_images
from engine.provenance import device_info, library_versions

Event = StepProgress | StepPreview
logger = logging.getLogger(__name__)
WARM_UP_STEPS = 2


@dataclass
class _Embeddings:
    prompt: torch.Tensor
    pooled: torch.Tensor
    negative: torch.Tensor | None
    negative_pooled: torch.Tensor | None


class Engine:
    """One loaded SD3 pipeline on one device. Not for concurrent use: calls are serialized."""

    def __init__(
        self,
        config: ModelConfig,
        pipe: StableDiffusion3Pipeline,
        device: torch.device,
        loaded: LoadedModel,
    ) -> None:
        self.config = config
        self.pipe = pipe
        self.device = device
        self.loaded = loaded
        self.provenance = Provenance(
            model_id=config.id,
            weights_revision=loaded.weights_revision,
            precisions=loaded.precisions,
            scheduler=type(pipe.scheduler).__name__,
            library_versions=library_versions(),
            device=loaded.device,
        )
        # One pipeline object must not run twice at once: the scheduler's step index is shared.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, config: ModelConfig) -> Engine:
        """Loads the model of ``config`` onto its device in the precision its policy resolves to.

        Raises ModelLoadError when the source, the device or the precision cannot be had.
        """
        device = resolve_device(config.device)
        capability = detect_capability(device)
        source = locate_source(config.source, config.revision)
        try:
            plan = plan_precision(config.precision, capability, source.fp8_components)
        except ValueError as exc:
            raise ModelLoadError(f"{config.source}: {exc}") from exc
        logger.info("model %s: precision %s", config.id, plan.reason)
        loaded_pipe = load_pipeline(source, plan.dtype)
        pipe = loaded_pipe.pipe
        try:
            apply_plan(pipe, plan, device)
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelLoadError(f"model {config.id} does not fit on {device}: {exc}") from exc
        loaded = LoadedModel(
            model_id=config.id,
            precisions=component_precisions(pipe),
            precision_reason=plan.reason,
            device=device_info(device),
            weights_revision=loaded_pipe.weights_revision,
        )
        return cls(config, pipe, device, loaded)

    def warm_up(self) -> None:
        """One short generation at the model's default size, so the first request is not slow
        (first calls allocate, pick kernels and fill caches)."""
        defaults = self.config.defaults
        spec = GenerationSpec(
            model=self.config.id,
            prompt="warm-up",
            negative_prompt="",
            width=defaults.width,
            height=defaults.height,
            steps=WARM_UP_STEPS,
            guidance_scale=defaults.guidance_scale,
            seed=0,
            # Previews on, so their projection and JPEG path is warm as well.
            preview=PreviewSettings(every_n_steps=1),
        )
        self.generate(spec, on_event=lambda event: None, should_stop=lambda: False)

    def generate(
        self,
        spec: GenerationSpec,
        on_event: Callable[[Event], None],
        should_stop: Callable[[], bool],
    ) -> GenerationOutput:
        """Generates ``spec.num_images`` images; raises GenerationCancelled when stopped."""
        with self._lock, torch.no_grad():
            if should_stop():
                raise GenerationCancelled(0)
            started = time.perf_counter()
            embeddings = self._encode_prompt(spec)
            text_done = self._sync_clock()
            if should_stop():
                raise GenerationCancelled(0)
            latents = self._denoise(spec, embeddings, on_event, should_stop)
            denoise_done = self._sync_clock()
            if should_stop():
                raise GenerationCancelled(spec.steps)
            pil_images = self._decode(latents)
            decode_done = self._sync_clock()
            images = tuple(
                encode_image(image, spec.output_format, spec.quality, seed)
                for image, seed in zip(pil_images, spec.image_seeds(), strict=True)
            )
            encode_done = time.perf_counter()
        timings = Timings(
            text_encoding_s=text_done - started,
            denoising_s=denoise_done - text_done,
            decoding_s=decode_done - denoise_done,
            image_encoding_s=encode_done - decode_done,
        )
        return GenerationOutput(images=images, timings=timings, provenance=self.provenance)

    def _encode_prompt(self, spec: GenerationSpec) -> _Embeddings:
        guided = spec.guidance_scale > 1.0  # the pipeline's own rule for classifier-free guidance
        prompt, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=spec.prompt,
            # The pipeline's own default: the same prompt for CLIP-G and T5.
            prompt_2=spec.prompt,
            prompt_3=spec.prompt,
            device=self.device,
            num_images_per_prompt=spec.num_images,
            do_classifier_free_guidance=guided,
            negative_prompt=spec.negative_prompt if guided else None,
        )
        return _Embeddings(prompt, pooled, negative, negative_pooled)

    def _denoise(
        self,
        spec: GenerationSpec,
        embeddings: _Embeddings,
        on_event: Callable[[Event], None],
        should_stop: Callable[[], bool],
    ) -> torch.Tensor:
        pipe = self.pipe
        # One CPU generator per image, so image i's noise depends on its seed alone and is the
        # same on every device. The initial latents are drawn here exactly as the pipeline would
        # draw them from these generators (same call), because previews need them.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in spec.image_seeds()]
        latents = pipe.prepare_latents(
            spec.num_images,
            pipe.transformer.config.in_channels,
            spec.height,
            spec.width,
            embeddings.prompt.dtype,
            self.device,
            generators,
        )
        tracker = _StepTracker(spec, on_event, should_stop, latents, time.perf_counter())
        result = pipe(
            prompt_embeds=embeddings.prompt,
            pooled_prompt_embeds=embeddings.pooled,
            negative_prompt_embeds=embeddings.negative,
            negative_pooled_prompt_embeds=embeddings.negative_pooled,
            height=spec.height,
            width=spec.width,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            latents=latents,
            output_type="latent",
            callback_on_step_end=tracker.on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        if tracker.cancelled_after is not None:
            raise GenerationCancelled(tracker.cancelled_after)
        final: torch.Tensor = result.images
        return final

    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        # What StableDiffusion3Pipeline does after its loop when output_type is not "latent".
        vae = self.pipe.vae
        latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
        decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        images: list[Image.Image] = self.pipe.image_processor.postprocess(
            decoded, output_type="pil"
        )
        return images

    def _sync_clock(self) -> float:
        # CUDA runs asynchronously: wait for the phase's kernels so its time is its own.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class _StepTracker:
    """The pipeline's ``callback_on_step_end``: progress, previews and cancellation per step."""

    def __init__(
        self,
        spec: GenerationSpec,
        on_event: Callable[[Event], None],
        should_stop: Callable[[], bool],
        initial_latents: torch.Tensor,
        started: float,
    ) -> None:
        self.spec = spec
        self.on_event = on_event
        self.should_stop = should_stop
        self.previous = initial_latents
        self.started = started
        self.cancelled_after: int | None = None

    def on_step_end(
        self,
        pipe: StableDiffusion3Pipeline,
        index: int,
        timestep: torch.Tensor,
        tensors: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        step = index + 1
        total = self.spec.steps
        elapsed = time.perf_counter() - self.started
        rate = step / elapsed if elapsed > 0 else 0.0
        self.on_event(
            StepProgress(
                step=step,
                total_steps=total,
                elapsed_s=elapsed,
                remaining_s=(total - step) / rate if rate > 0 else 0.0,
                steps_per_second=rate,
            )
        )
        every = self.spec.preview.every_n_steps
        if every > 0:
            latents = tensors["latents"]
            if step % every == 0 or step == total:
                self.on_event(StepPreview(step=step, images=self._previews(pipe, latents)))
            # The scheduler returns a new tensor each step, so a reference is enough.
            self.previous = latents
        if self.should_stop():
            # The pipeline skips every remaining step once this is set.
            pipe._interrupt = True
            self.cancelled_after = step
        return {}

    def _previews(
        self, pipe: StableDiffusion3Pipeline, latents: torch.Tensor
    ) -> tuple[EncodedImage, ...]:
        scheduler = pipe.scheduler
        estimate = latents
        if isinstance(scheduler, FlowMatchEulerDiscreteScheduler) and scheduler.step_index:
            # After step i the scheduler points at sigma i+1; the step went from sigma i.
            after = float(scheduler.sigmas[scheduler.step_index])
            before = float(scheduler.sigmas[scheduler.step_index - 1])
            estimate = flow_x0_estimate(latents, self.previous, before, after)
        pictures = latents_to_images(
            estimate, self.spec.preview.max_size, self.spec.width, self.spec.height
        )
        return tuple(
            encode_image(picture, ImageFormat.JPEG, quality=80, seed=seed)
            for picture, seed in zip(pictures, self.spec.image_seeds(), strict=True)
        )
