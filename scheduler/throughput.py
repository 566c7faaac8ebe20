"""Measured throughput of a model's replicas, for queue-wait estimates, deadline admission and
retry delays.

A job's time on a replica is modelled as ``pixels x images x (overhead + steps x per_step)``:
denoising scales with steps, images and pixels (the latent has one token per 16x16 pixels, and
the transformer's work grows with the tokens); text encoding and decoding with images and pixels
only. So a measured 64x64 job predicts a 1024x1024 one at 256 times the work, instead of the
same time. Attention's quadratic part is left out: at SD3.5's sizes the linear layers dominate.

Each device name (a kind of GPU, or the CPU) has its own figures: an H100 and a CPU differ by
orders of magnitude. Without a device the estimate is the mean over the devices measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.job import GenerationSpec


@dataclass
class _Rates:
    """Exponential moving averages for one device name."""

    seconds_per_pixel_step: float
    overhead_per_pixel_s: float


def _work(spec: GenerationSpec) -> int:
    return max(1, spec.num_images) * max(1, spec.width * spec.height)


class ThroughputEstimate:
    """Seconds per pixel-step and fixed seconds per pixel, per device name."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self._smoothing = smoothing
        self._by_device: dict[str, _Rates] = {}

    def record(self, spec: GenerationSpec, denoising_s: float, run_s: float, device: str) -> None:
        """Fold in one finished job on ``device``: its denoising time and its whole time on the
        replica."""
        pixels = _work(spec)
        per_step = denoising_s / (pixels * max(1, spec.steps))
        overhead = max(0.0, run_s - denoising_s) / pixels
        rates = self._by_device.get(device)
        if rates is None:
            self._by_device[device] = _Rates(per_step, overhead)
            return
        rates.seconds_per_pixel_step = self._blend(rates.seconds_per_pixel_step, per_step)
        rates.overhead_per_pixel_s = self._blend(rates.overhead_per_pixel_s, overhead)

    def job_seconds(self, spec: GenerationSpec, device: str | None = None) -> float | None:
        """Expected time on a replica (on ``device``, or on an average one), or None before
        anything was measured there."""
        if device is not None and device in self._by_device:
            measured = [self._by_device[device]]
        else:
            measured = list(self._by_device.values())
        if not measured:
            return None
        per_pixel = sum(
            rates.overhead_per_pixel_s + spec.steps * rates.seconds_per_pixel_step
            for rates in measured
        ) / len(measured)
        return _work(spec) * per_pixel

    def _blend(self, current: float, sample: float) -> float:
        return (1 - self._smoothing) * current + self._smoothing * sample
