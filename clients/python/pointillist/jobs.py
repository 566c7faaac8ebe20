"""Typed values of the JobService: a job's state, parameters and record, and request priority.

Plain frozen dataclasses and enums, free of protobuf; ``pointillist.conversion`` builds them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pointillist.errors import PointillistError
from pointillist.events import Progress, Result

__all__ = ["GenerationParameters", "JobInfo", "JobState", "Priority"]


class Priority(enum.StrEnum):
    """Where a job waits among the jobs queued for the same model: high ones start first."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    UNSPECIFIED = "unspecified"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class GenerationParameters:
    """A job's parameters as the server ran them: model and defaults resolved, seed chosen.

    ``client.submit(**parameters.as_kwargs())`` (or ``generate``) makes the same images again on
    the same device. The input images of image-to-image and inpainting are not repeated here (the
    result's ``Reproducibility`` has their hashes): ``strength`` is set for those jobs, and
    ``as_kwargs`` leaves it out, so pass ``image=`` (and ``mask=``) with ``strength=`` again.
    """

    model: str
    prompt: str
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
    # Image-to-image and inpainting only (None for text-to-image).
    strength: float | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Client.submit`` / ``generate`` / ``stream`` for these
        parameters (``generate`` takes no preview arguments: drop them for it)."""
        return {
            "prompt": self.prompt,
            "model": self.model,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            "num_images": self.num_images,
            "output_format": self.output_format,
            "quality": self.quality,
            "preview_every": self.preview_every,
            "preview_size": self.preview_size,
        }


@dataclass(frozen=True)
class JobInfo:
    """A job as the server knows it (``Client.get_job``, ``Client.cancel_job``).

    Times are timezone-aware (UTC). ``progress`` is the last finished step (None before the
    first); ``result`` is set when the job succeeded, ``error`` (the exception its watchers get)
    when it failed or was cancelled.
    """

    id: str
    state: JobState
    parameters: GenerationParameters
    priority: Priority
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None
    cancel_requested: bool
    result: Result | None
    error: PointillistError | None = field(default=None, compare=False)

    @property
    def finished(self) -> bool:
        """Whether the job has ended."""
        return self.state.finished
