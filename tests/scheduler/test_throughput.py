"""The throughput model behind queue waits, deadline admission and RetryInfo."""

from __future__ import annotations

import dataclasses

import pytest

from engine.job import GenerationSpec
from scheduler.throughput import ThroughputEstimate


def job(size: int, steps: int = 10, images: int = 1) -> GenerationSpec:
    return GenerationSpec(
        model="demo", prompt="p", negative_prompt="", width=size, height=size,
        steps=steps, guidance_scale=4.5, seed=0, num_images=images,
    )  # fmt: skip


def test_nothing_measured_means_no_estimate():
    assert ThroughputEstimate().job_seconds(job(64)) is None


def test_a_measured_job_predicts_itself_and_scales_with_pixels_steps_and_images():
    estimate = ThroughputEstimate()
    estimate.record(job(64), denoising_s=1.0, run_s=1.5, device="cpu")

    assert estimate.job_seconds(job(64)) == pytest.approx(1.5)
    assert estimate.job_seconds(job(1024)) == pytest.approx(1.5 * 256)  # 256x the pixels
    assert estimate.job_seconds(job(64, steps=20)) == pytest.approx(2.0 + 0.5)
    assert estimate.job_seconds(job(64, images=3)) == pytest.approx(3 * 1.5)


def test_each_device_has_its_own_figures_and_no_device_means_their_mean():
    estimate = ThroughputEstimate()
    estimate.record(job(64), denoising_s=1.0, run_s=1.0, device="cpu")
    estimate.record(job(64), denoising_s=0.01, run_s=0.01, device="H100")

    assert estimate.job_seconds(job(64), "cpu") == pytest.approx(1.0)
    assert estimate.job_seconds(job(64), "H100") == pytest.approx(0.01)
    assert estimate.job_seconds(job(64)) == pytest.approx((1.0 + 0.01) / 2)
    assert estimate.job_seconds(job(64), "A100") == pytest.approx((1.0 + 0.01) / 2)


def test_new_measurements_move_the_estimate_smoothly():
    estimate = ThroughputEstimate(smoothing=0.5)
    spec = job(64)
    estimate.record(spec, denoising_s=1.0, run_s=1.0, device="cpu")
    estimate.record(dataclasses.replace(spec), denoising_s=3.0, run_s=3.0, device="cpu")

    assert estimate.job_seconds(spec) == pytest.approx(2.0)
