"""Dynamic batching: several compatible requests through one pipeline call (demo weights).

The product promise under test: each member of a batch gets the bytes it would get alone, its
own events for every step, and its own cancellation.
"""

from __future__ import annotations

import io
from collections import defaultdict

import pytest
import torch
from PIL import Image

from engine import fp8
from engine.batch_invariance import MIN_GEMM_ROWS, make_batch_invariant
from engine.engine import Engine
from engine.job import (
    GenerationCancelled,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    PreviewSettings,
    StepPreview,
    StepProgress,
    batch_key,
)
from engine.precision import COMPONENTS
from tests.engine.conftest import SpecFactory, transformer_batches

Event = StepProgress | StepPreview


class Recorder:
    """on_event for a batch: every member's events, in arrival order."""

    def __init__(self) -> None:
        self.events: dict[int, list[Event]] = defaultdict(list)

    def __call__(self, index: int, event: Event) -> None:
        self.events[index].append(event)

    def steps(self, index: int) -> list[int]:
        return [e.step for e in self.events[index] if isinstance(e, StepProgress)]

    def preview_steps(self, index: int) -> list[int]:
        return [e.step for e in self.events[index] if isinstance(e, StepPreview)]


def three_members(make_spec: SpecFactory, **shared: object) -> list[GenerationSpec]:
    """Different prompts, negatives, seeds, image counts, formats and previews; one batch key."""
    return [
        make_spec(**shared),
        make_spec(
            prompt="a red fox in the snow",
            negative_prompt="",
            seed=99,
            num_images=2,
            preview=PreviewSettings(every_n_steps=3, max_size=32),
            **shared,
        ),
        make_spec(
            prompt="mountains at noon, oil on canvas",
            negative_prompt="ugly, dark",
            seed=2**64 - 1,  # its second image wraps to seed 0
            num_images=2,
            output_format=ImageFormat.WEBP,
            quality=60,
            preview=PreviewSettings(every_n_steps=2),
            **shared,
        ),
    ]


def outputs(outcomes: list[GenerationOutput | GenerationCancelled]) -> list[GenerationOutput]:
    assert all(isinstance(outcome, GenerationOutput) for outcome in outcomes)
    return [outcome for outcome in outcomes if isinstance(outcome, GenerationOutput)]


def alone(engine: Engine, spec: GenerationSpec) -> GenerationOutput:
    return engine.generate(spec, lambda event: None, lambda: False)


# --- batch_key ------------------------------------------------------------------------------


def test_batch_key_ignores_what_each_member_may_have_its_own_of(make_spec: SpecFactory) -> None:
    specs = three_members(make_spec)
    assert len({batch_key(spec) for spec in specs}) == 1


@pytest.mark.parametrize(
    "change",
    [{"model": "other"}, {"width": 128}, {"height": 128}, {"steps": 5}, {"guidance_scale": 7.0}],
)
def test_batch_key_separates_what_the_loop_shares(
    make_spec: SpecFactory, change: dict[str, object]
) -> None:
    assert batch_key(make_spec()) != batch_key(make_spec(**change))


def test_guidance_off_is_one_key_whatever_the_scale(make_spec: SpecFactory) -> None:
    # A scale <= 1 turns classifier-free guidance off, and the pipeline then never reads it.
    assert batch_key(make_spec(guidance_scale=1.0)) == batch_key(make_spec(guidance_scale=0.5))
    assert batch_key(make_spec(guidance_scale=1.0)) != batch_key(make_spec(guidance_scale=1.5))


def test_a_batch_must_share_one_key(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    with pytest.raises(ValueError, match="batch_key"):
        bf16_engine.generate_batch(
            [make_spec(), make_spec(steps=3)], lambda i, e: None, lambda i: False
        )
    with pytest.raises(ValueError, match="at least one"):
        bf16_engine.generate_batch([], lambda i, e: None, lambda i: False)


# --- identical results ----------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ["bf16_engine", "fp32_engine", "fp8_engine"])
def test_each_member_gets_the_bytes_it_would_get_alone(
    engine_name: str, make_spec: SpecFactory, request: pytest.FixtureRequest
) -> None:
    # 128x96 and 8 steps: in fp32, without MIN_GEMM_ROWS padding, the batch's conditioning
    # matmuls round differently and PNG bytes here do differ (by 1 in a few pixels).
    engine: Engine = request.getfixturevalue(engine_name)
    specs = three_members(make_spec, width=128, height=96, steps=8)
    recorder = Recorder()
    with transformer_batches(engine) as batches:
        batched = outputs(engine.generate_batch(specs, recorder, lambda i: False))

    # One pipeline call: 8 steps, each on all 5 images twice (negative and positive halves).
    assert batches == [2 * 5] * 8
    for spec, output in zip(specs, batched, strict=True):
        expected = alone(engine, spec)
        assert [image.data for image in output.images] == [i.data for i in expected.images]
        assert [image.seed for image in output.images] == spec.image_seeds()
        for image in output.images:
            picture = Image.open(io.BytesIO(image.data))
            assert picture.size == (128, 96)
            assert picture.format == spec.output_format.name
    # Different seeds and prompts gave different pictures: nothing was shared by mistake.
    all_bytes = [image.data for output in batched for image in output.images]
    assert len(set(all_bytes)) == len(all_bytes) == 5
    assert [image.seed for image in batched[2].images] == [2**64 - 1, 0]


def test_a_batch_without_guidance_matches_too(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    specs = [make_spec(guidance_scale=1.0), make_spec(guidance_scale=0.5, seed=5, prompt="x")]
    with transformer_batches(bf16_engine) as batches:
        batched = outputs(bf16_engine.generate_batch(specs, lambda i, e: None, lambda i: False))
    assert batches == [2] * 4  # no guidance: one row per image
    for spec, output in zip(specs, batched, strict=True):
        assert output.images[0].data == alone(bf16_engine, spec).images[0].data


def test_linear_rows_do_not_depend_on_their_batch_at_full_size() -> None:
    # SD3.5-Medium's AdaLayerNorm width (1536 -> 6 x 1536): one row per image and guidance
    # branch. Plain oneDNN bf16 and MKL fp32 kernels round 1, 2 or 3 rows differently from 16.
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        linear = torch.nn.Linear(1536, 9216, dtype=dtype)
        make_batch_invariant(linear, MIN_GEMM_ROWS)
        make_batch_invariant(linear, MIN_GEMM_ROWS)  # patching twice wraps once
        rows = torch.randn(8, 1536, dtype=dtype)
        with torch.no_grad():
            one_by_one = torch.cat([linear(rows[i : i + 1]) for i in range(8)])
            pair = linear(rows[[5, 2]])
            reordered = linear(rows[[7, 6, 5, 4, 3, 2, 1, 0]])
            # A strided 3-D input (a slice, as joint attention passes) gets the same bits.
            strided = linear(torch.cat([rows, rows]).reshape(2, 8, 1536)[:, :4])
            plain = torch.nn.functional.linear(rows, linear.weight, linear.bias)
        assert torch.equal(pair, one_by_one[[5, 2]])
        assert torch.equal(reordered, one_by_one.flip(0))
        assert torch.equal(strided.reshape(8, 9216), one_by_one[[0, 1, 2, 3, 0, 1, 2, 3]])
        # The padding and the copy change which kernel runs, not what is computed.
        torch.testing.assert_close(one_by_one, plain)


class RecordingConv(torch.nn.Conv2d):
    """A Conv2d that notes the batch size of every input it really convolves."""

    def __init__(self) -> None:
        super().__init__(16, 64, 2, stride=2)
        self.batch_sizes: list[int] = []

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(input))
        return super().forward(input)


def test_convolutions_and_activations_run_one_sample_at_a_time() -> None:
    torch.manual_seed(0)
    conv = RecordingConv()
    block = torch.nn.Sequential(conv, torch.nn.GELU("tanh"))
    samples = torch.randn(5, 16, 12, 16)
    with torch.no_grad():
        plain = block(samples)
        make_batch_invariant(block, MIN_GEMM_ROWS)
        conv.batch_sizes.clear()
        batched = block(samples)
        assert conv.batch_sizes == [1] * 5
        alone = torch.cat([block(samples[i : i + 1]) for i in range(5)])
    assert torch.equal(batched, alone)
    torch.testing.assert_close(batched, plain)


def test_every_layer_of_the_transformer_that_needs_it_is_patched(bf16_engine: Engine) -> None:
    transformer = bf16_engine.pipe.transformer
    layers = [m for m in transformer.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    activations = [m for m in transformer.modules() if "GELU" in type(m).__name__]
    assert layers and activations
    for module in layers + activations:
        assert "Forward" in type(module.forward).__name__, module


# --- events ---------------------------------------------------------------------------------


def test_every_member_gets_every_step_and_its_own_previews(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    specs = three_members(make_spec, steps=7)
    recorder = Recorder()
    bf16_engine.generate_batch(specs, recorder, lambda i: False)

    for index in range(3):
        assert recorder.steps(index) == [1, 2, 3, 4, 5, 6, 7]
        progress = [e for e in recorder.events[index] if isinstance(e, StepProgress)]
        assert {event.total_steps for event in progress} == {7}
        assert progress[-1].remaining_s == 0.0
        elapsed = [event.elapsed_s for event in progress]
        assert elapsed == sorted(elapsed)
    assert recorder.preview_steps(0) == []
    assert recorder.preview_steps(1) == [3, 6, 7]
    assert recorder.preview_steps(2) == [2, 4, 6, 7]
    # Each preview follows its own step's progress and holds the member's own images.
    for index, spec in enumerate(specs):
        events = recorder.events[index]
        for position, event in enumerate(events):
            if isinstance(event, StepPreview):
                before = events[position - 1]
                assert isinstance(before, StepProgress) and before.step == event.step
                assert [image.seed for image in event.images] == spec.image_seeds()

    def preview_sizes(index: int) -> set[tuple[int, int]]:
        previews = [e for e in recorder.events[index] if isinstance(e, StepPreview)]
        return {(image.width, image.height) for p in previews for image in p.images}

    # Member 1 asked for 32-pixel previews; member 2's default 256 is capped by its 64x64 size.
    assert preview_sizes(1) == {(32, 32)}
    assert preview_sizes(2) == {(64, 64)}


def test_member_previews_match_their_lone_previews(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    specs = three_members(make_spec, steps=4)
    recorder = Recorder()
    bf16_engine.generate_batch(specs, recorder, lambda i: False)
    lone: list[Event] = []
    bf16_engine.generate(specs[2], lone.append, lambda: False)
    # Progress carries wall-clock times; previews carry only pixels, which must be the same.
    batched_previews = [e for e in recorder.events[2] if isinstance(e, StepPreview)]
    assert batched_previews == [e for e in lone if isinstance(e, StepPreview)]
    assert len(batched_previews) == 2


# --- cancellation ---------------------------------------------------------------------------


def test_a_cancelled_member_stops_alone_and_the_others_are_untouched(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    specs = three_members(make_spec, steps=6)
    recorder = Recorder()

    def should_stop(index: int) -> bool:
        # Member 1 is cancelled while its step 2 runs.
        return index == 1 and 2 in recorder.steps(1)

    with transformer_batches(bf16_engine) as batches:
        outcomes = bf16_engine.generate_batch(specs, recorder, should_stop)

    cancelled = outcomes[1]
    assert isinstance(cancelled, GenerationCancelled) and cancelled.completed_steps == 2
    assert recorder.steps(1) == [1, 2]  # and nothing after
    # The others ran to the end, in the same batch (the cancelled rows were computed too).
    assert batches == [2 * 5] * 6
    for index in (0, 2):
        output = outcomes[index]
        assert isinstance(output, GenerationOutput)
        assert recorder.steps(index) == [1, 2, 3, 4, 5, 6]
        assert [i.data for i in output.images] == [
            i.data for i in alone(bf16_engine, specs[index]).images
        ]


def test_when_every_member_is_cancelled_the_loop_stops_at_that_step(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    specs = three_members(make_spec, steps=10)
    recorder = Recorder()
    stop_after = {0: 2, 1: 4, 2: 3}

    def should_stop(index: int) -> bool:
        return stop_after[index] in recorder.steps(index)

    with transformer_batches(bf16_engine) as batches:
        outcomes = bf16_engine.generate_batch(specs, recorder, should_stop)

    for index, steps in stop_after.items():
        outcome = outcomes[index]
        assert isinstance(outcome, GenerationCancelled)
        assert outcome.completed_steps == steps
        assert recorder.steps(index) == list(range(1, steps + 1))
    # The last member stopped after step 4: no fifth step ran.
    assert len(batches) == 4


def test_a_member_cancelled_before_the_loop_leaves_the_batch(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    specs = three_members(make_spec)
    recorder = Recorder()
    with transformer_batches(bf16_engine) as batches:
        outcomes = bf16_engine.generate_batch(specs, recorder, lambda index: index == 1)

    cancelled = outcomes[1]
    assert isinstance(cancelled, GenerationCancelled) and cancelled.completed_steps == 0
    assert recorder.events[1] == []
    assert batches == [2 * 3] * 4  # members 0 and 2 only: 1 + 2 images
    for index in (0, 2):
        output = outcomes[index]
        assert isinstance(output, GenerationOutput)
        assert output.images[0].data == alone(bf16_engine, specs[index]).images[0].data


def test_a_batch_cancelled_before_start_runs_nothing(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    recorder = Recorder()
    with transformer_batches(bf16_engine) as batches:
        outcomes = bf16_engine.generate_batch(three_members(make_spec), recorder, lambda i: True)
    assert [type(o) for o in outcomes] == [GenerationCancelled] * 3
    assert batches == [] and not recorder.events


def test_the_engine_batches_again_after_a_cancelled_batch(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    specs = three_members(make_spec)
    recorder = Recorder()
    bf16_engine.generate_batch(specs, recorder, lambda i: 1 in recorder.steps(i))
    again = Recorder()
    batched = outputs(bf16_engine.generate_batch(specs, again, lambda i: False))
    assert [again.steps(i) for i in range(3)] == [[1, 2, 3, 4]] * 3
    assert batched[0].images[0].data == alone(bf16_engine, specs[0]).images[0].data


# --- timings, warm-up, weight bytes ---------------------------------------------------------


def test_timings_are_per_member_except_the_shared_loop(
    bf16_engine: Engine, make_spec: SpecFactory
) -> None:
    batched = outputs(
        bf16_engine.generate_batch(three_members(make_spec), lambda i, e: None, lambda i: False)
    )
    timings = [output.timings for output in batched]
    assert all(t.text_encoding_s > 0 and t.decoding_s > 0 for t in timings)
    assert all(t.image_encoding_s > 0 and t.denoising_s > 0 for t in timings)
    assert len({t.denoising_s for t in timings}) == 1
    assert all(t.queue_wait_s == 0 and t.total_s == 0 for t in timings)
    assert all(output.provenance == bf16_engine.provenance for output in batched)


def test_warm_up_runs_the_request_it_is_given(bf16_engine: Engine, make_spec: SpecFactory) -> None:
    limits = bf16_engine.config.limits
    largest = make_spec(
        width=limits.max_width, height=limits.max_height, num_images=limits.max_images, steps=2
    )
    with transformer_batches(bf16_engine) as batches:
        bf16_engine.warm_up(largest)
    # The request as given, then image-to-image and inpainting: one image, one step each.
    assert batches == [2 * limits.max_images] * 2 + [2, 2]


def test_warm_up_without_a_spec_uses_the_defaults(bf16_engine: Engine) -> None:
    with transformer_batches(bf16_engine) as batches:
        bf16_engine.warm_up()
    assert batches == [2, 2, 2, 2]


def test_loaded_model_reports_its_weight_bytes(bf16_engine: Engine, fp8_engine: Engine) -> None:
    for engine in (bf16_engine, fp8_engine):
        modules = [getattr(engine.pipe, name) for name in COMPONENTS]
        assert engine.loaded.weight_bytes == sum(fp8.weight_bytes(m) for m in modules) > 0
    # FP8 stores the transformer and T5 in one byte per weight instead of two.
    assert fp8_engine.loaded.weight_bytes < bf16_engine.loaded.weight_bytes
