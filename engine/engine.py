"""The engine a worker process drives: load a model once, then generate images step by step.

``generate_batch`` runs the pipeline's phases itself (text encoding, denoising, VAE decoding,
image encoding) so each is timed, for one or more compatible requests (equal ``batch_key``) in
one denoising loop. It reports every denoising step of every member through ``on_event`` and
stops a member at the next step end once ``should_stop`` says so. ``generate`` is the batch of
one.

Batching and identical results. Each member gets the image bytes it would get alone:

- Text encoding, VAE decoding and image encoding run per member, with the very shapes a lone
  request has. Only the transformer runs on the whole batch.
- The transformer's batch is laid out as StableDiffusion3Pipeline lays out classifier-free
  guidance: ``[negatives of member 0..n-1 | positives of member 0..n-1]`` (each member's images
  in order), the latents repeated in the same order, and ``noise_pred.chunk(2)`` splits it back.
- On the CPU kernels measured (MKL, oneDNN), attention, norms and large matmuls give each
  sample the same bits whatever the batch holds. Linears, convolutions and activations do not
  by themselves (few rows, bias fusion that depends on the input's layout, a batch of one,
  thread splits); ``engine.batch_invariance`` removes each cause in the transformer (see there).
- Checked with the demo model on random batches (guidance on and off, 1 to 4 members of 1 to 3
  images, 64 to 256 pixels): byte-identical in bf16, fp32 and FP8 on this project's CPUs (AMD
  EPYC, 2 threads, torch 2.13; Intel Xeon, 16 threads, torch 2.11) and in FP8 and bf16 on an
  H100 (torch 2.11, cuBLAS, which was batch-invariant there even without the patches). Other
  kernels (libraries, GPUs, larger models) may round differently: the guarantee is what
  ``tests/engine/test_batching.py`` checks where it runs.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

import torch
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from PIL import Image

from engine import fp8
from engine.batch_invariance import make_batch_invariant
from engine.batch_outcomes import BatchOutcome, BatchOutcomes, OutcomeCallback
from engine.compiled import CompiledTransformer
from engine.config import ModelConfig
from engine.embedding_cache import EmbeddingCache, EmbeddingKey, PromptEmbeddings
from engine.image_encoding import encode_image
from engine.image_modes import (
    ModePipelines,
    image_call_arguments,
    image_mode_warm_ups,
    keep_unmasked,
)
from engine.job import (
    GenerationCancelled,
    GenerationOutput,
    GenerationSpec,
    LoadedModel,
    PreviewSettings,
    Provenance,
    Timings,
    batch_key,
)
from engine.library_versions import library_versions
from engine.loading import ModelLoadError, load_pipeline, locate_source, resolve_device
from engine.precision import (
    COMPONENTS,
    apply_plan,
    component_precisions,
    detect_capability,
    plan_precision,
)
from engine.provenance import device_info
from engine.step_tracker import BatchMember, Event, StepTracker
from engine.worker_tracing import UNTRACED, BatchRecorder

logger = logging.getLogger(__name__)
WARM_UP_STEPS = 2
# The pipeline's own default token limit for T5, passed explicitly because it is part of the
# embedding cache's key.
MAX_SEQUENCE_LENGTH = 256


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
        # A member of a batch must get the bits it would get alone (see the module docstring).
        make_batch_invariant(pipe.transformer)
        # Installed after the patches above, so the compiled graphs trace the patched layers.
        sizes = config.compiled_sizes()
        self.compiled = CompiledTransformer(pipe.transformer, len(sizes)) if sizes else None
        self.pipelines = ModePipelines(pipe)
        # One pipeline object must not run twice at once: the scheduler's step index is shared.
        self._lock = threading.Lock()
        self.embedding_cache = EmbeddingCache(config.embedding_cache_bytes)
        text_encoders = [p for p in loaded.precisions if p.component.startswith("text_encoder")]
        self._encoder_identity = "|".join(
            [loaded.weights_revision]
            + [f"{p.component}:{p.weights}/{p.compute}" for p in text_encoders]
        )

    @classmethod
    def load(cls, config: ModelConfig) -> Engine:
        """Loads the model of ``config`` onto its device in the precision its policy resolves to.

        Raises ModelLoadError when the source, the device or the precision cannot be had.
        """
        device = resolve_device(config.device)
        capability = detect_capability(device)
        source = locate_source(config.source, config.revision)
        try:
            plan = plan_precision(
                config.precision, capability, source.fp8_components, source.fp8_backend
            )
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
            weight_bytes=pipeline_weight_bytes(pipe),
        )
        return cls(config, pipe, device, loaded)

    def warm_up(self, spec: GenerationSpec | None = None) -> None:
        """One short generation, so the first request is not slow (first calls allocate, pick
        kernels and fill caches).

        With ``spec``, that request is run as given: the scheduler passes the model's largest
        (widest, tallest, most images, few steps) so the memory measured afterwards covers the
        worst case. Without, ``WARM_UP_STEPS`` steps at the model's default size, previews on.
        Then image-to-image and inpainting run once each, one image and one step
        (``engine.image_modes.image_mode_warm_ups``). A compiled model compiles first
        (``compile_transformer``).
        """
        self.compile_transformer()
        if spec is None:
            defaults = self.config.defaults
            spec = dataclasses.replace(
                self._short_request(defaults.width, defaults.height),
                # Previews on, so their projection and JPEG path is warm as well.
                preview=PreviewSettings(every_n_steps=1),
            )
        for request in [spec, *image_mode_warm_ups(spec)]:
            self.generate(request, on_event=lambda event: None, should_stop=lambda: False)

    def compile_transformer(self) -> None:
        """With ``compile``: compiles the transformer for a one-image request at each of the
        model's compiled sizes, text-to-image and inpainting (``engine.compiled``). Part of the
        warm-up, so before the replica reports ready and before its footprint is measured."""
        if self.compiled is None:
            return
        started = time.perf_counter()
        with self.compiled.compiling():
            for width, height in self.config.compiled_sizes():
                spec = self._short_request(width, height)
                inpainting = image_mode_warm_ups(spec)[-1]
                for request in (spec, inpainting):
                    self.generate(request, on_event=lambda event: None, should_stop=lambda: False)
        logger.info(
            "model %s: transformer compiled for %s in %.1f s",
            self.config.id,
            ", ".join(f"{w}x{h}" for w, h in self.config.compiled_sizes()),
            time.perf_counter() - started,
        )

    def _short_request(self, width: int, height: int) -> GenerationSpec:
        """A one-image ``WARM_UP_STEPS`` request at this size, the model's default guidance."""
        return GenerationSpec(
            model=self.config.id,
            prompt="warm-up",
            negative_prompt="",
            width=width,
            height=height,
            steps=WARM_UP_STEPS,
            guidance_scale=self.config.defaults.guidance_scale,
            seed=0,
        )

    def generate(
        self,
        spec: GenerationSpec,
        on_event: Callable[[Event], None],
        should_stop: Callable[[], bool],
    ) -> GenerationOutput:
        """Generates ``spec.num_images`` images; raises GenerationCancelled when stopped."""
        (outcome,) = self.generate_batch(
            [spec], lambda _index, event: on_event(event), lambda _index: should_stop()
        )
        if isinstance(outcome, GenerationCancelled):
            raise outcome
        return outcome

    def generate_batch(
        self,
        specs: Sequence[GenerationSpec],
        on_event: Callable[[int, Event], None],
        should_stop: Callable[[int], bool],
        recorder: BatchRecorder = UNTRACED,
        on_outcome: OutcomeCallback | None = None,
    ) -> list[BatchOutcome]:
        """Runs ``specs`` (equal ``batch_key``) through one denoising loop.

        Returns one outcome per spec, in order: its GenerationOutput, or GenerationCancelled
        (not raised) when ``should_stop(i)`` said so. ``on_event(i, event)`` gets member i's
        progress for every step and its previews at its own cadence; a stopped member gets
        no more events.

        ``should_stop(i)`` is asked before text encoding, after it, at every step end, after the
        loop and before the member's decoding. A member stopped before the loop leaves the batch
        (``completed_steps`` 0). Once the loop runs, its batch is fixed: a member stopped during
        it stops receiving events, but its rows are computed until the loop ends, unless every
        member has stopped, and then the loop ends at that step (``pipe._interrupt``).

        Timings are a member's own for text encoding, decoding and image encoding; denoising
        is the shared loop's time. Time spent on other members' phases is in none of them.

        ``recorder`` times each phase for the members it traces (``engine.worker_tracing``).

        ``on_outcome(i, outcome)`` is told each member's outcome as soon as it is decided: a
        member stopped mid-loop at once, a member's result once its own images are encoded.

        Raises ValueError when ``specs`` is empty or holds different batch keys.
        """
        if not specs:
            raise ValueError("a batch needs at least one request")
        keys = {batch_key(spec) for spec in specs}
        if len(keys) > 1:
            raise ValueError(f"requests of one batch must share one batch_key, got {keys}")
        outcomes = BatchOutcomes(len(specs), on_outcome)
        with self._lock, torch.no_grad():
            members: list[BatchMember] = []
            for index, spec in enumerate(specs):
                if should_stop(index):
                    outcomes[index] = GenerationCancelled(0)
                    continue
                started = time.perf_counter()
                with recorder.phase("text_encoding", [index]):
                    embeddings, cached = self._encode_prompt(spec)
                    recorder.annotate(index, "text_encoding", **{"pointillist.cache.hit": cached})
                members.append(
                    BatchMember(index, spec, embeddings, self._sync_clock() - started, cached)
                )
            members = _still_running(members, should_stop, outcomes, completed_steps=0)
            if members:
                denoise_started = time.perf_counter()
                with recorder.phase(
                    "denoising",
                    [member.index for member in members],
                    **self._trace_attributes(len(members)),
                ):
                    latents = self._denoise(members, on_event, should_stop, outcomes)
                    denoising_s = self._sync_clock() - denoise_started
                for member in members:
                    if outcomes[member.index] is not None:
                        continue  # stopped during the loop
                    if should_stop(member.index):
                        outcomes[member.index] = GenerationCancelled(member.spec.steps_run)
                        continue
                    outcomes[member.index] = self._finish(member, latents, denoising_s, recorder)
        return outcomes.filled()

    def _finish(
        self,
        member: BatchMember,
        latents: torch.Tensor,
        denoising_s: float,
        recorder: BatchRecorder,
    ) -> GenerationOutput:
        """Decodes and encodes one member's images, alone (the shapes of a lone request)."""
        spec = member.spec
        started = time.perf_counter()
        with recorder.phase("vae_decode", [member.index]):
            pil_images = keep_unmasked(self._decode(latents[member.rows]), spec)
            decode_done = self._sync_clock()
        with recorder.phase("image_encoding", [member.index], format=spec.output_format.value):
            images = tuple(
                encode_image(image, spec.output_format, spec.quality, seed)
                for image, seed in zip(pil_images, spec.image_seeds(), strict=True)
            )
        timings = Timings(
            text_encoding_s=member.text_encoding_s,
            denoising_s=denoising_s,
            decoding_s=decode_done - started,
            image_encoding_s=time.perf_counter() - decode_done,
            text_encoding_cached=member.text_encoding_cached,
        )
        return GenerationOutput(images=images, timings=timings, provenance=self.provenance)

    def _encode_prompt(self, spec: GenerationSpec) -> tuple[PromptEmbeddings, bool]:
        """The member's embeddings from the replica's cache, else from the three text encoders;
        and whether they came from the cache."""
        guided = spec.guidance_scale > 1.0  # the pipeline's own rule for classifier-free guidance
        key = EmbeddingKey(
            model_id=self.config.id,
            encoder_identity=self._encoder_identity,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt if guided else None,
            num_images=spec.num_images,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
        cached = self.embedding_cache.get(key)
        if cached is not None:
            return cached.to(self.device), True
        prompt, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=spec.prompt,
            # The pipeline's own default: the same prompt for CLIP-G and T5.
            prompt_2=spec.prompt,
            prompt_3=spec.prompt,
            device=self.device,
            num_images_per_prompt=spec.num_images,
            do_classifier_free_guidance=guided,
            negative_prompt=spec.negative_prompt if guided else None,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
        embeddings = PromptEmbeddings(prompt, pooled, negative, negative_pooled)
        self.embedding_cache.put(key, embeddings)
        return embeddings, False

    def _denoise(
        self,
        members: list[BatchMember],
        on_event: Callable[[int, Event], None],
        should_stop: Callable[[int], bool],
        outcomes: BatchOutcomes,
    ) -> torch.Tensor:
        """One pipeline call for all members; returns the final latents of the whole batch."""
        pipe = self.pipe
        first = members[0].spec  # members share mode, size, steps, strength and guidance
        first_row = 0
        for member in members:
            member.first_row = first_row
            first_row += member.spec.num_images
        if first.init_image is not None:
            # Image modes: the pipeline noises the init latents itself (engine.image_modes).
            inputs = image_call_arguments(pipe, [m.spec for m in members], self.device)
            initial: torch.Tensor | None = None
        else:
            initial = self._initial_latents(members)
            inputs = {"latents": initial}
        guided = first.guidance_scale > 1.0
        # Members' images in order along the batch axis; the pipeline then builds its guidance
        # batch as cat([negative, prompt]) and cat([latents] * 2), so row r of the conditional
        # half pairs with row r of the unconditional half, as in a lone request.
        embeddings = [member.embeddings for member in members]
        negative = [e.negative for e in embeddings if e.negative is not None]
        negative_pooled = [e.negative_pooled for e in embeddings if e.negative_pooled is not None]
        tracker = StepTracker(
            members, on_event, should_stop, outcomes, initial, time.perf_counter()
        )
        result = self.pipelines.for_mode(first.mode)(
            prompt_embeds=torch.cat([e.prompt for e in embeddings]),
            pooled_prompt_embeds=torch.cat([e.pooled for e in embeddings]),
            negative_prompt_embeds=torch.cat(negative) if guided else None,
            negative_pooled_prompt_embeds=torch.cat(negative_pooled) if guided else None,
            height=first.height,
            width=first.width,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            output_type="latent",
            callback_on_step_end=tracker.on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
            **inputs,
        )
        final: torch.Tensor = result.images
        return final

    def _initial_latents(self, members: list[BatchMember]) -> torch.Tensor:
        """Text-to-image noise, drawn exactly as the pipeline would draw it (same call, per
        member as a lone request would), because previews need it. One CPU generator per
        image, so image i's noise depends on its seed alone and is the same on every device."""
        pipe = self.pipe
        parts = []
        for member in members:
            spec = member.spec
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in spec.image_seeds()]
            parts.append(
                pipe.prepare_latents(
                    spec.num_images,
                    pipe.transformer.config.in_channels,
                    spec.height,
                    spec.width,
                    member.embeddings.prompt.dtype,
                    self.device,
                    generators,
                )
            )
        return torch.cat(parts)

    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        # What StableDiffusion3Pipeline does after its loop when output_type is not "latent".
        vae = self.pipe.vae
        latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
        decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        images: list[Image.Image] = self.pipe.image_processor.postprocess(
            decoded, output_type="pil"
        )
        return images

    def _trace_attributes(self, batch_size: int) -> dict[str, str | int]:
        """What a traced denoising phase says about where and how it ran."""
        attributes: dict[str, str | int] = {
            "pointillist.batch_size": batch_size,
            "pointillist.device.id": self.loaded.device.id,
            "pointillist.device.kind": self.loaded.device.kind,
        }
        for precision in self.loaded.precisions:
            attributes[f"pointillist.precision.{precision.component}"] = (
                f"{precision.weights}/{precision.compute}"
            )
        return attributes

    def _sync_clock(self) -> float:
        # CUDA runs asynchronously: wait for the phase's kernels so its time is its own.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def pipeline_weight_bytes(pipe: StableDiffusion3Pipeline) -> int:
    """Bytes every weight-holding component of ``pipe`` really stores (FP8 counted as FP8)."""
    modules = (getattr(pipe, name, None) for name in COMPONENTS)
    return sum(fp8.weight_bytes(m) for m in modules if isinstance(m, torch.nn.Module))


def _still_running(
    members: list[BatchMember],
    should_stop: Callable[[int], bool],
    outcomes: BatchOutcomes,
    completed_steps: int,
) -> list[BatchMember]:
    running = []
    for member in members:
        if should_stop(member.index):
            outcomes[member.index] = GenerationCancelled(completed_steps)
        else:
            running.append(member)
    return running
