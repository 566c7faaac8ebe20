"""Measured throughput of a model's replicas, for queue-wait estimates and retry delays."""

from __future__ import annotations

from engine.job import GenerationSpec


class ThroughputEstimate:
    """Exponential moving averages of seconds per image-step and fixed seconds per image.

    A job's duration is modelled as ``images * (overhead + steps * seconds_per_image_step)``:
    denoising scales with steps and images, text encoding and decoding with images only.
    """

    def __init__(self, smoothing: float = 0.3) -> None:
        self._smoothing = smoothing
        self.seconds_per_image_step: float | None = None
        self.overhead_per_image_s: float | None = None

    def record(self, spec: GenerationSpec, denoising_s: float, run_s: float) -> None:
        """Fold in one finished job: its denoising time and its whole time on the replica."""
        images = max(1, spec.num_images)
        per_step = denoising_s / (images * max(1, spec.steps))
        overhead = max(0.0, run_s - denoising_s) / images
        self.seconds_per_image_step = self._blend(self.seconds_per_image_step, per_step)
        self.overhead_per_image_s = self._blend(self.overhead_per_image_s, overhead)

    def job_seconds(self, spec: GenerationSpec) -> float | None:
        """Expected time on a replica, or None before anything was measured."""
        if self.seconds_per_image_step is None or self.overhead_per_image_s is None:
            return None
        per_image = self.overhead_per_image_s + spec.steps * self.seconds_per_image_step
        return max(1, spec.num_images) * per_image

    def _blend(self, current: float | None, sample: float) -> float:
        if current is None:
            return sample
        return (1 - self._smoothing) * current + self._smoothing * sample
