"""Members of a batched denoising loop, and the pipeline callback that reports each one's steps.

The callback (``callback_on_step_end``) turns every step of the shared loop into each running
member's progress and previews, and stops the loop (``pipe._interrupt``) once every member has
stopped.
"""

from __future__ import annotations

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

from engine.batch_outcomes import BatchOutcomes
from engine.embedding_cache import PromptEmbeddings
from engine.image_encoding import encode_image
from engine.job import (
    EncodedImage,
    GenerationCancelled,
    GenerationSpec,
    ImageFormat,
    StepPreview,
    StepProgress,
)
from engine.preview import flow_x0_estimate, latents_to_images

Event = StepProgress | StepPreview


@dataclass
class BatchMember:
    """A request inside a batch: its position in the caller's list and its rows in the loop."""

    index: int
    spec: GenerationSpec
    embeddings: PromptEmbeddings
    text_encoding_s: float
    # Whether the embeddings came from the replica's cache (the text encoders did not run).
    text_encoding_cached: bool = False
    # Where its images start along the loop's batch axis (set when the batch is laid out).
    first_row: int = 0

    @property
    def rows(self) -> slice:
        return slice(self.first_row, self.first_row + self.spec.num_images)


class StepTracker:
    """The pipeline's ``callback_on_step_end``: progress, previews and cancellation per member."""

    def __init__(
        self,
        members: list[BatchMember],
        on_event: Callable[[int, Event], None],
        should_stop: Callable[[int], bool],
        outcomes: BatchOutcomes,
        initial_latents: torch.Tensor | None,
        started: float,
    ) -> None:
        self.members = members
        self.on_event = on_event
        self.should_stop = should_stop
        self.outcomes = outcomes
        self.previous = initial_latents
        self.started = started

    def on_step_end(
        self,
        pipe: StableDiffusion3Pipeline,
        index: int,
        timestep: torch.Tensor,
        tensors: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        step = index + 1
        total = self.members[0].spec.steps_run  # image modes skip the schedule's start
        elapsed = time.perf_counter() - self.started
        rate = step / elapsed if elapsed > 0 else 0.0
        progress = StepProgress(
            step=step,
            total_steps=total,
            elapsed_s=elapsed,
            remaining_s=(total - step) / rate if rate > 0 else 0.0,
            steps_per_second=rate,
        )
        latents = tensors["latents"]
        running = [m for m in self.members if self.outcomes[m.index] is None]
        for member in running:
            self.on_event(member.index, progress)
            every = member.spec.preview.every_n_steps
            if every > 0 and (step % every == 0 or step == total):
                images = self._previews(pipe, member, latents)
                self.on_event(member.index, StepPreview(step=step, images=images))
            if self.should_stop(member.index):
                self.outcomes[member.index] = GenerationCancelled(step)
        # The scheduler returns a new tensor each step, so a reference is enough.
        self.previous = latents
        if all(self.outcomes[m.index] is not None for m in self.members):
            # The pipeline skips every remaining step once this is set.
            pipe._interrupt = True
        return {}

    def _previews(
        self, pipe: StableDiffusion3Pipeline, member: BatchMember, latents: torch.Tensor
    ) -> tuple[EncodedImage, ...]:
        spec = member.spec
        scheduler = pipe.scheduler
        estimate = latents[member.rows]
        # Image modes: the pipeline draws the first latents itself, so step 1 shows them raw.
        if (
            self.previous is not None
            and isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
            and scheduler.step_index
        ):
            # After step i the scheduler points at sigma i+1; the step went from sigma i.
            after = float(scheduler.sigmas[scheduler.step_index])
            before = float(scheduler.sigmas[scheduler.step_index - 1])
            estimate = flow_x0_estimate(estimate, self.previous[member.rows], before, after)
        pictures = latents_to_images(estimate, spec.preview.max_size, spec.width, spec.height)
        return tuple(
            encode_image(picture, ImageFormat.JPEG, quality=80, seed=seed)
            for picture, seed in zip(pictures, spec.image_seeds(), strict=True)
        )
