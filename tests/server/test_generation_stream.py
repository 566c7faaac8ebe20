"""StreamGenerate and Generate end to end: real server, real channel, real demo pipeline."""

from __future__ import annotations

import io

import grpc
import pytest
from PIL import Image

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.errors import JobDeadlineError
from tests.holds import new_hold


def params(**fields: object) -> pb.GenerationParameters:
    values: dict[str, object] = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64}
    values.update(fields)
    return pb.GenerationParameters(**values)  # type: ignore[arg-type]


def stream(
    stub: pb_grpc.GenerationServiceStub, **fields: object
) -> list[pb.StreamGenerateResponse]:
    request = pb.StreamGenerateRequest(parameters=params(**fields))
    return list(stub.StreamGenerate(request, timeout=120))


def test_stream_sends_queued_started_every_step_in_order_then_one_result(stub):
    events = stream(stub, steps=7, seed=1)

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["queued", "started"] + ["progress"] * 7 + ["result"]
    progress = [event.progress for event in events if event.HasField("progress")]
    assert [p.step for p in progress] == list(range(1, 8))
    assert all(p.total_steps == 7 for p in progress)
    elapsed = [p.elapsed.ToTimedelta() for p in progress]
    assert elapsed == sorted(elapsed)
    assert progress[-1].estimated_remaining.ToNanoseconds() == 0
    assert all(p.steps_per_second > 0 for p in progress)
    assert len({event.job_id for event in events}) == 1 and events[0].job_id


def test_result_carries_decodable_images_seeds_timings_and_provenance(stub):
    result = stream(stub, steps=3, seed=42, num_images=2)[-1].result

    assert [image.seed for image in result.images] == [42, 43]
    for image in result.images:
        assert image.mime_type == "image/png"
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.size == (image.width, image.height) == (64, 64)
    timings = result.timings
    for phase in ("text_encoding", "denoising", "decoding", "image_encoding"):
        assert getattr(timings, phase).ToNanoseconds() > 0, phase
    assert timings.total.ToNanoseconds() >= timings.denoising.ToNanoseconds()
    record = result.reproducibility
    assert record.model_id == "demo"
    assert record.weights_revision.startswith("demo-v1-")
    assert record.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert {"torch", "diffusers", "transformers", "torchao"} <= set(record.library_versions)
    assert record.device.kind == pb.DEVICE_KIND_CPU
    components = {p.component for p in record.precisions}
    assert {"transformer", "vae", "text_encoder", "text_encoder_2"} <= components


def test_unary_generate_returns_the_result_only(stub):
    response = stub.Generate(pb.GenerateRequest(parameters=params(steps=2, seed=5)), timeout=120)

    assert response.job_id
    assert len(response.result.images) == 1
    assert response.result.images[0].seed == 5


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(stub):
    first = stream(stub, steps=4, seed=1234)[-1].result.images[0].data
    again = stream(stub, steps=4, seed=1234)[-1].result.images[0].data
    other = stream(stub, steps=4, seed=1235)[-1].result.images[0].data

    assert first == again
    assert first != other


def test_absent_seed_is_chosen_by_the_server_and_reported(stub):
    first = stream(stub, steps=2)[-1].result.images[0]
    redo = stream(stub, steps=2, seed=first.seed)[-1].result.images[0]

    assert redo.data == first.data


def test_previews_arrive_at_the_asked_cadence_and_size(stub):
    events = stream(
        stub,
        steps=7,
        seed=3,
        width=128,
        height=64,
        preview=pb.PreviewOptions(every_n_steps=3, max_size=32),
    )

    previews = [event.preview for event in events if event.HasField("preview")]
    assert [p.step for p in previews] == [3, 6, 7]
    for preview in previews:
        (image,) = preview.images
        decoded = Image.open(io.BytesIO(image.data))
        assert max(decoded.size) <= 32
        assert decoded.size == (image.width, image.height)
    # Each preview comes right after the progress event of its step.
    kinds = [event.WhichOneof("event") for event in events]
    for index, kind in enumerate(kinds):
        if kind == "preview":
            assert events[index - 1].progress.step == events[index].preview.step


def test_previews_are_off_by_default(stub):
    events = stream(stub, steps=3, seed=3)

    assert not any(event.HasField("preview") for event in events)


@pytest.mark.parametrize(
    ("image_format", "mime"),
    [(pb.IMAGE_FORMAT_JPEG, "image/jpeg"), (pb.IMAGE_FORMAT_WEBP, "image/webp")],
)
def test_lossy_formats_are_encoded_as_asked(stub, image_format, mime):
    image = stream(stub, steps=2, seed=9, output_format=image_format, quality=70)[-1].result.images[
        0
    ]

    assert image.mime_type == mime
    assert Image.open(io.BytesIO(image.data)).format == mime.split("/")[1].upper()


def test_list_models_reports_precision_limits_defaults_and_readiness(stub):
    response = stub.ListModels(pb.ListModelsRequest(), timeout=10)

    assert response.default_model == "demo"
    (model,) = response.models
    assert model.id == "demo" and model.source == "demo" and model.ready
    assert model.precision_policy == "auto"
    assert model.precision_reason
    assert model.device_kinds == [pb.DEVICE_KIND_CPU]
    assert model.limits.max_width == 512 and model.limits.max_images == 4
    assert model.defaults.width == 256 and model.defaults.steps == 20
    precisions = {p.component: p for p in model.precisions}
    assert precisions["vae"].weights in (pb.PRECISION_BF16, pb.PRECISION_FP32)


def test_deadline_too_short_for_the_job_ends_with_deadline_exceeded(stub, demo_server):
    # The job is held after its first step, so it is still running when the deadline passes,
    # however fast the machine is; the server, not only the client library, must end it.
    hold = new_hold("deadline")
    request = pb.StreamGenerateRequest(parameters=params(prompt=hold.prompt, steps=4, seed=1))
    call = stub.StreamGenerate(request, timeout=3.0)
    job_id = next(call).job_id

    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    job = demo_server.wait_job_finished(job_id)
    assert isinstance(job.error, JobDeadlineError), job.error
    assert job.completed_steps is not None and job.completed_steps < 4
