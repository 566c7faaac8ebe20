"""Generation through the real diffusers SD3 pipeline (demo weights): events, seeds, cancel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.engine import Engine
from engine.job import (
    GenerationCancelled,
    ImageFormat,
    PreviewSettings,
    StepPreview,
    StepProgress,
)
from tests.engine.conftest import SpecFactory

Event = StepProgress | StepPreview


def test_progress_is_one_event_per_step_in_order(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    events: list[Event] = []
    bf16_engine.generate(make_spec(steps=6), events.append, lambda: False)

    assert all(isinstance(event, StepProgress) for event in events)
    progress = [event for event in events if isinstance(event, StepProgress)]
    assert [event.step for event in progress] == [1, 2, 3, 4, 5, 6]
    assert {event.total_steps for event in progress} == {6}
    elapsed = [event.elapsed_s for event in progress]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert all(event.steps_per_second > 0 for event in progress)
    assert progress[-1].remaining_s == 0.0
    assert progress[0].remaining_s > 0


def test_previews_follow_the_cadence_and_the_last_step(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    spec = make_spec(
        steps=7,
        width=128,
        height=96,
        num_images=2,
        preview=PreviewSettings(every_n_steps=3, max_size=64),
    )
    events: list[Event] = []
    bf16_engine.generate(spec, events.append, lambda: False)

    previews = [event for event in events if isinstance(event, StepPreview)]
    assert [preview.step for preview in previews] == [3, 6, 7]
    for preview in previews:
        assert len(preview.images) == 2
        assert [image.seed for image in preview.images] == spec.image_seeds()
        for encoded in preview.images:
            assert encoded.mime_type == "image/jpeg"
            picture = Image.open(io.BytesIO(encoded.data))
            assert picture.format == "JPEG"
            # Longest side bounded by max_size, aspect ratio of the 128x96 result kept.
            assert picture.size == (encoded.width, encoded.height) == (64, 48)
    # Each preview comes right after the progress event of its step.
    for index, event in enumerate(events):
        if isinstance(event, StepPreview):
            before = events[index - 1]
            assert isinstance(before, StepProgress) and before.step == event.step


def test_previews_never_exceed_the_image_size(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    spec = make_spec(steps=2, preview=PreviewSettings(every_n_steps=1, max_size=512))
    events: list[Event] = []
    bf16_engine.generate(spec, events.append, lambda: False)
    previews = [event for event in events if isinstance(event, StepPreview)]
    assert [preview.step for preview in previews] == [1, 2]
    assert {(image.width, image.height) for p in previews for image in p.images} == {(64, 64)}


def test_the_largest_demo_size_runs(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    limits = bf16_engine.config.limits
    spec = make_spec(width=limits.max_width, height=limits.max_height // 2, steps=1)
    (image,) = bf16_engine.generate(spec, lambda event: None, lambda: False).images
    assert (image.width, image.height) == (512, 256)


def test_no_previews_when_off(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    events: list[Event] = []
    bf16_engine.generate(make_spec(), events.append, lambda: False)
    assert not any(isinstance(event, StepPreview) for event in events)


def test_same_spec_gives_the_same_bytes(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    spec = make_spec(num_images=2)
    first = bf16_engine.generate(spec, lambda event: None, lambda: False)
    second = bf16_engine.generate(spec, lambda event: None, lambda: False)

    assert [image.data for image in first.images] == [image.data for image in second.images]
    assert [image.seed for image in first.images] == [1234, 1235]
    # Two images of one request differ: each has its own seed.
    assert first.images[0].data != first.images[1].data


def test_another_seed_gives_another_image(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    first = bf16_engine.generate(make_spec(seed=1), lambda event: None, lambda: False)
    second = bf16_engine.generate(make_spec(seed=2), lambda event: None, lambda: False)
    assert first.images[0].data != second.images[0].data


def test_an_image_depends_on_its_own_seed_only(fp32_engine: Engine, make_spec: SpecFactory) -> None:
    # The second image of a (seed 7, seed 8) request is the image of a lone seed-8 request: its
    # noise comes from its own generator. Compared as pixels, within a small tolerance, because
    # a batch of two may take other matmul kernels than a batch of one.
    pair = fp32_engine.generate(make_spec(seed=7, num_images=2), lambda e: None, lambda: False)
    alone = fp32_engine.generate(make_spec(seed=8), lambda e: None, lambda: False)
    assert pair.images[1].seed == alone.images[0].seed == 8
    a = np.asarray(Image.open(io.BytesIO(pair.images[1].data)), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(alone.images[0].data)), dtype=np.int16)
    assert np.abs(a - b).max() <= 2


def test_cancel_after_step_k_stops_there(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)

    def should_stop() -> bool:
        # Flips once step 3's progress is out, like a cancel arriving during step 3.
        return any(isinstance(event, StepProgress) and event.step >= 3 for event in events)

    spec = make_spec(steps=10, preview=PreviewSettings(every_n_steps=2))
    with pytest.raises(GenerationCancelled) as cancelled:
        bf16_engine.generate(spec, on_event, should_stop)

    assert cancelled.value.completed_steps == 3
    assert [e.step for e in events if isinstance(e, StepProgress)] == [1, 2, 3]
    assert [e.step for e in events if isinstance(e, StepPreview)] == [2]


def test_cancel_before_start_runs_nothing(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    events: list[Event] = []
    with pytest.raises(GenerationCancelled) as cancelled:
        bf16_engine.generate(make_spec(), events.append, lambda: True)
    assert cancelled.value.completed_steps == 0
    assert events == []


def test_engine_runs_again_after_a_cancel(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    stop_now = [True]
    with pytest.raises(GenerationCancelled):
        bf16_engine.generate(make_spec(), lambda event: None, lambda: stop_now[0])
    events: list[Event] = []
    output = bf16_engine.generate(make_spec(), events.append, lambda: False)
    assert len(output.images) == 1
    assert [e.step for e in events if isinstance(e, StepProgress)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("image_format", "mime_type", "pil_format"),
    [
        (ImageFormat.PNG, "image/png", "PNG"),
        (ImageFormat.JPEG, "image/jpeg", "JPEG"),
        (ImageFormat.WEBP, "image/webp", "WEBP"),
    ],
)
def test_output_formats(
    bf16_engine: Engine,
    make_spec: SpecFactory,
    image_format: ImageFormat,
    mime_type: str,
    pil_format: str,
) -> None:
    spec = make_spec(width=96, height=64, steps=2, output_format=image_format, quality=70)
    output = bf16_engine.generate(spec, lambda event: None, lambda: False)
    (image,) = output.images
    assert image.mime_type == mime_type
    assert (image.width, image.height) == (96, 64)
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == pil_format
    assert decoded.size == (96, 64)


def test_timings_and_provenance(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    output = bf16_engine.generate(make_spec(), lambda event: None, lambda: False)
    timings = output.timings
    assert timings.text_encoding_s > 0
    assert timings.denoising_s > 0
    assert timings.decoding_s > 0
    assert timings.image_encoding_s > 0
    # The scheduler's phases are left to the scheduler.
    assert timings.queue_wait_s == 0 and timings.total_s == 0

    provenance = output.provenance
    assert provenance.model_id == "demo"
    assert provenance.weights_revision.startswith("demo-v1-")
    assert provenance.weights_revision == bf16_engine.loaded.weights_revision
    assert provenance.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert set(provenance.library_versions) == {
        "torch",
        "diffusers",
        "transformers",
        "torchao",
        "optimum-quanto",
        "pointillist",
    }
    assert provenance.device.kind == "cpu"
    assert provenance.precisions == bf16_engine.loaded.precisions


def test_warm_up_runs_a_short_generation(bf16_engine: Engine) -> None:
    bf16_engine.warm_up()


def test_guidance_off_skips_the_negative_prompt(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    guided = bf16_engine.generate(make_spec(guidance_scale=4.5), lambda e: None, lambda: False)
    plain = bf16_engine.generate(make_spec(guidance_scale=1.0), lambda e: None, lambda: False)
    assert guided.images[0].data != plain.images[0].data
