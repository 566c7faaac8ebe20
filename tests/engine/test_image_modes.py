"""Image-to-image and inpainting in the engine: the steps that run, batching, the mask."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from engine.engine import Engine
from engine.job import (
    GenerationMode,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    InputImage,
    StepProgress,
    batch_key,
    steps_to_run,
)
from tests.engine.conftest import SpecFactory, transformer_batches
from tests.engine.test_batching import Recorder, alone, outputs


def input_image(width: int, height: int, seed: int) -> InputImage:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = pixels.tobytes()
    return InputImage(data, width, height, 3, hashlib.sha256(data).hexdigest())


def right_half_mask(width: int, height: int) -> InputImage:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, width // 2 :] = 255
    data = mask.tobytes()
    return InputImage(data, width, height, 1, hashlib.sha256(data).hexdigest())


def rgb(output: GenerationOutput, index: int = 0) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(output.images[index].data)).convert("RGB"))


def test_steps_to_run_follows_the_pipelines_rounding() -> None:
    assert steps_to_run(20, 1.0) == 20
    assert steps_to_run(20, 0.5) == 10
    # diffusers skips int(steps - steps x strength) steps: a share of a step rounds up, so any
    # strength above 0 runs at least one step.
    assert steps_to_run(20, 0.33) == 7
    assert steps_to_run(8, 0.1) == 1
    assert steps_to_run(100, 0.001) == 1


def test_the_mode_and_strength_are_part_of_the_batch_key(make_spec: SpecFactory) -> None:
    image = input_image(64, 64, 0)
    text = make_spec()
    half = make_spec(init_image=image, strength=0.5)
    assert half.mode is GenerationMode.IMAGE_TO_IMAGE
    assert batch_key(text) != batch_key(half)
    assert batch_key(half) != batch_key(make_spec(init_image=image, strength=0.75))
    inpaint = make_spec(init_image=image, mask=right_half_mask(64, 64), strength=0.5)
    assert inpaint.mode is GenerationMode.INPAINTING
    assert batch_key(inpaint) != batch_key(half)
    # Another member's image is its own business.
    assert batch_key(half) == batch_key(make_spec(init_image=input_image(64, 64, 1), strength=0.5))


@pytest.mark.parametrize(("strength", "ran"), [(1.0, 8), (0.5, 4)])
def test_img2img_runs_steps_times_strength_and_says_so(
    bf16_engine: Engine, make_spec: SpecFactory, strength: float, ran: int
) -> None:
    spec = make_spec(steps=8, init_image=input_image(64, 64, 0), strength=strength)
    events: list[object] = []
    with transformer_batches(bf16_engine) as batches:
        output = bf16_engine.generate(spec, events.append, lambda: False)

    progress = [e for e in events if isinstance(e, StepProgress)]
    assert [p.step for p in progress] == list(range(1, ran + 1))
    assert {p.total_steps for p in progress} == {ran}
    assert len(batches) == ran
    assert rgb(output).shape == (64, 64, 3)


def test_a_lower_strength_stays_closer_to_the_init_image(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    image = input_image(64, 64, 0)

    def changed(strength: float) -> np.ndarray:
        spec = make_spec(steps=8, init_image=image, strength=strength)
        first = rgb(bf16_engine.generate(spec, lambda e: None, lambda: False))
        return first.astype(float)

    # The demo VAE is random, so not even strength 0 would give the input back; compare the
    # outputs with each other instead: a light touch differs less from a lighter one.
    light, medium, full = changed(0.25), changed(0.5), changed(1.0)
    assert np.abs(light - medium).mean() < np.abs(light - full).mean()


def test_inpainting_keeps_the_unmasked_pixels(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    image = input_image(64, 64, 0)
    spec = make_spec(steps=8, init_image=image, mask=right_half_mask(64, 64), strength=0.75)
    result = rgb(bf16_engine.generate(spec, lambda e: None, lambda: False)).astype(float)
    source = np.frombuffer(image.pixels, dtype=np.uint8).reshape(64, 64, 3).astype(float)
    difference = np.abs(result - source)

    kept, repainted = difference[:, :32].mean(), difference[:, 32:].mean()
    assert kept < 1.0  # PNG: the input's own pixels
    assert repainted > 20.0


@pytest.mark.parametrize("with_mask", [False, True])
def test_batched_image_members_get_the_bytes_they_would_get_alone(
    bf16_engine: Engine, make_spec: SpecFactory, with_mask: bool
) -> None:
    mask = right_half_mask(128, 96) if with_mask else None
    shared = {"width": 128, "height": 96, "steps": 8, "strength": 0.6, "mask": mask}
    specs: list[GenerationSpec] = [
        make_spec(init_image=input_image(128, 96, 0), **shared),
        make_spec(
            init_image=input_image(128, 96, 1),
            prompt="a red fox in the snow",
            seed=99,
            num_images=2,
            **shared,
        ),
        make_spec(
            init_image=input_image(128, 96, 2),
            output_format=ImageFormat.JPEG,
            seed=7,
            **shared,
        ),
    ]
    recorder = Recorder()
    with transformer_batches(bf16_engine) as batches:
        batched = outputs(bf16_engine.generate_batch(specs, recorder, lambda i: False))

    ran = steps_to_run(8, 0.6)
    assert batches == [2 * 4] * ran  # one loop over all four images
    for index, (spec, output) in enumerate(zip(specs, batched, strict=True)):
        assert recorder.steps(index) == list(range(1, ran + 1))
        expected = alone(bf16_engine, spec)
        assert [i.data for i in output.images] == [i.data for i in expected.images]
    all_bytes = [image.data for output in batched for image in output.images]
    assert len(set(all_bytes)) == len(all_bytes) == 4
