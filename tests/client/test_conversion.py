"""Request building and proto -> typed event conversion, from real pointillist.v1 messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from pointillist import (
    ComponentPrecision,
    Device,
    DeviceKind,
    Image,
    Precision,
    Preview,
    Progress,
    Queued,
    Result,
    Started,
)
from pointillist.conversion import (
    build_parameters,
    event_from_proto,
    generate_request,
    model_list_from_proto,
    result_from_proto,
    stream_request,
)
from pointillist.v1 import generation_pb2 as pb


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def make_result_proto(num_images: int = 2, seed: int = 42) -> pb.GenerationResult:
    device = pb.Device(kind=pb.DEVICE_KIND_CUDA, id="GPU-1234", name="NVIDIA H100 80GB HBM3")
    return pb.GenerationResult(
        images=[
            pb.Image(
                data=b"\x89PNG" + bytes([i]),
                mime_type="image/png",
                width=1024,
                height=768,
                seed=seed + i,
            )
            for i in range(num_images)
        ],
        timings=pb.Timings(
            queue_wait=duration(0.25),
            text_encoding=duration(0.1),
            denoising=duration(3.5),
            decoding=duration(0.4),
            image_encoding=duration(0.05),
            total=duration(4.3),
        ),
        reproducibility=pb.Reproducibility(
            model_id="sd35-medium",
            weights_revision="abc123",
            precisions=[
                pb.ComponentPrecision(
                    component="transformer",
                    weights=pb.PRECISION_FP8_E4M3,
                    compute=pb.PRECISION_BF16,
                ),
                pb.ComponentPrecision(
                    component="vae", weights=pb.PRECISION_BF16, compute=pb.PRECISION_BF16
                ),
            ],
            scheduler="FlowMatchEulerDiscreteScheduler",
            library_versions={"torch": "2.5.1", "diffusers": "0.32.0"},
            device=device,
        ),
    )


# -- parameters ---------------------------------------------------------------------------------


def test_defaults_leave_optional_fields_absent() -> None:
    parameters = build_parameters("a fox")

    assert parameters.prompt == "a fox"
    assert parameters.num_images == 1
    assert parameters.output_format == pb.IMAGE_FORMAT_PNG
    assert not parameters.HasField("guidance_scale")
    assert not parameters.HasField("seed")
    assert not parameters.HasField("preview")


def test_every_parameter_reaches_the_message() -> None:
    parameters = build_parameters(
        "a fox",
        model="sd35-medium",
        negative_prompt="blurry",
        width=1024,
        height=768,
        steps=28,
        guidance_scale=4.5,
        seed=2**64 - 1,
        num_images=3,
        output_format="WEBP",
        quality=80,
        preview_every=4,
        preview_size=128,
    )

    assert parameters == pb.GenerationParameters(
        model="sd35-medium",
        prompt="a fox",
        negative_prompt="blurry",
        width=1024,
        height=768,
        steps=28,
        guidance_scale=4.5,
        seed=2**64 - 1,
        num_images=3,
        output_format=pb.IMAGE_FORMAT_WEBP,
        quality=80,
        preview=pb.PreviewOptions(every_n_steps=4, max_size=128),
    )


def test_zero_guidance_and_seed_are_sent_as_present() -> None:
    parameters = build_parameters("a fox", guidance_scale=0.0, seed=0)

    assert parameters.HasField("guidance_scale")
    assert parameters.HasField("seed")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("png", pb.IMAGE_FORMAT_PNG), ("jpeg", pb.IMAGE_FORMAT_JPEG), ("jpg", pb.IMAGE_FORMAT_JPEG)],
)
def test_output_format_names(name: str, expected: int) -> None:
    assert build_parameters("x", output_format=name).output_format == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"output_format": "gif"},
        {"width": -16},
        {"num_images": -1},
        {"seed": -1},
        {"seed": 2**64},
        {"steps": 2**32},
    ],
)
def test_values_the_wire_cannot_carry_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_parameters("x", **kwargs)  # type: ignore[arg-type]


def test_requests_wrap_the_parameters() -> None:
    parameters = build_parameters("a fox", steps=4)

    assert generate_request(parameters).parameters == parameters
    assert stream_request(parameters).parameters == parameters


# -- events -------------------------------------------------------------------------------------


def test_queued_event() -> None:
    response = pb.StreamGenerateResponse(
        job_id="job-1", queued=pb.QueuedEvent(position=3, estimated_wait=duration(12.5))
    )

    assert event_from_proto(response) == Queued(job_id="job-1", position=3, estimated_wait_s=12.5)


def test_queued_event_without_estimate() -> None:
    response = pb.StreamGenerateResponse(job_id="job-1", queued=pb.QueuedEvent(position=0))

    assert event_from_proto(response) == Queued(job_id="job-1", position=0, estimated_wait_s=None)


def test_started_event() -> None:
    response = pb.StreamGenerateResponse(
        job_id="job-1",
        started=pb.StartedEvent(
            replica_id="r2",
            device=pb.Device(kind=pb.DEVICE_KIND_CPU, id="cpu", name="AMD EPYC"),
            batch_size=2,
        ),
    )

    assert event_from_proto(response) == Started(
        job_id="job-1",
        replica_id="r2",
        device=Device(kind=DeviceKind.CPU, id="cpu", name="AMD EPYC"),
        batch_size=2,
    )


def test_progress_event() -> None:
    response = pb.StreamGenerateResponse(
        job_id="job-1",
        progress=pb.ProgressEvent(
            step=7,
            total_steps=28,
            elapsed=duration(3.5),
            estimated_remaining=duration(10.5),
            steps_per_second=2.3,
        ),
    )

    assert event_from_proto(response) == Progress(
        job_id="job-1",
        step=7,
        total_steps=28,
        elapsed_s=3.5,
        remaining_s=10.5,
        steps_per_second=2.3,  # sent as float32, read back as the value meant
    )


def test_progress_without_estimate_has_no_remaining_time() -> None:
    response = pb.StreamGenerateResponse(
        job_id="job-1", progress=pb.ProgressEvent(step=1, total_steps=4)
    )

    event = event_from_proto(response)

    assert isinstance(event, Progress)
    assert event.remaining_s is None
    assert event.elapsed_s == 0.0


def test_preview_event() -> None:
    response = pb.StreamGenerateResponse(
        job_id="job-1",
        preview=pb.PreviewEvent(
            step=4,
            images=[pb.Image(data=b"jpeg", mime_type="image/jpeg", width=256, height=192)],
        ),
    )

    assert event_from_proto(response) == Preview(
        job_id="job-1",
        step=4,
        images=[Image(data=b"jpeg", mime_type="image/jpeg", width=256, height=192, seed=0)],
    )


def test_result_event() -> None:
    response = pb.StreamGenerateResponse(job_id="job-1", result=make_result_proto())

    event = event_from_proto(response)

    assert isinstance(event, Result)
    assert event.job_id == "job-1"
    assert event.seeds == [42, 43]
    assert [image.data for image in event.images] == [b"\x89PNG\x00", b"\x89PNG\x01"]
    assert (event.images[0].width, event.images[0].height) == (1024, 768)
    assert event.timings.queue_wait_s == 0.25
    assert event.timings.denoising_s == 3.5
    assert event.timings.total_s == 4.3
    record = event.reproducibility
    assert record.model_id == "sd35-medium"
    assert record.weights_revision == "abc123"
    assert record.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert record.library_versions == {"torch": "2.5.1", "diffusers": "0.32.0"}
    assert record.device == Device(DeviceKind.CUDA, "GPU-1234", "NVIDIA H100 80GB HBM3")
    assert record.precisions == [
        ComponentPrecision("transformer", Precision.FP8_E4M3, Precision.BF16),
        ComponentPrecision("vae", Precision.BF16, Precision.BF16),
    ]


def test_generate_response_result() -> None:
    response = pb.GenerateResponse(job_id="job-9", result=make_result_proto(num_images=1, seed=7))

    result = result_from_proto(response.job_id, response.result)

    assert result.job_id == "job-9"
    assert result.seeds == [7]


def test_an_event_this_client_does_not_know_is_skipped() -> None:
    # A newer server's new oneof member arrives as an unknown field: no event is set.
    assert event_from_proto(pb.StreamGenerateResponse(job_id="job-1")) is None


def test_unknown_enum_values_read_as_unspecified() -> None:
    response = pb.StreamGenerateResponse(
        job_id="job-1",
        started=pb.StartedEvent(device=pb.Device(kind=99, id="npu0")),  # type: ignore[arg-type]
    )

    event = event_from_proto(response)

    assert isinstance(event, Started)
    assert event.device.kind is DeviceKind.UNSPECIFIED


def test_image_save_writes_the_bytes(tmp_path: Path) -> None:
    image = Image(data=b"\x89PNG data", mime_type="image/png", width=8, height=8, seed=1)

    path = image.save(tmp_path / "out.png")

    assert path == tmp_path / "out.png"
    assert path.read_bytes() == b"\x89PNG data"
    assert image.extension == ".png"


# -- models -------------------------------------------------------------------------------------


def test_model_list() -> None:
    response = pb.ListModelsResponse(
        default_model="demo",
        models=[
            pb.ModelInfo(
                id="demo",
                source="demo",
                precision_policy="auto",
                precisions=[
                    pb.ComponentPrecision(
                        component="transformer",
                        weights=pb.PRECISION_BF16,
                        compute=pb.PRECISION_BF16,
                    )
                ],
                precision_reason="auto: no CUDA device, running bf16",
                device_kinds=[pb.DEVICE_KIND_CPU, pb.DEVICE_KIND_CUDA],
                limits=pb.ModelLimits(
                    max_width=512,
                    max_height=384,
                    max_steps=50,
                    max_images=4,
                    max_prompt_chars=900,
                    max_pixel_steps=1 << 40,
                ),
                defaults=pb.ModelDefaults(width=256, height=256, steps=28, guidance_scale=7.2),
                ready=True,
            )
        ],
    )

    listing = model_list_from_proto(response)

    assert listing.default_model == "demo"
    model = listing.get("demo")
    assert model is not None
    assert listing.get("nope") is None
    assert model.source == "demo"
    assert model.precision_policy == "auto"
    assert model.precision_reason == "auto: no CUDA device, running bf16"
    assert model.precisions == [ComponentPrecision("transformer", Precision.BF16, Precision.BF16)]
    assert model.device_kinds == [DeviceKind.CPU, DeviceKind.CUDA]
    assert (model.limits.max_width, model.limits.max_height) == (512, 384)
    assert (model.limits.max_steps, model.limits.max_images) == (50, 4)
    assert model.limits.max_prompt_chars == 900
    assert model.limits.max_pixel_steps == 1 << 40
    assert (model.defaults.width, model.defaults.height, model.defaults.steps) == (256, 256, 28)
    assert model.defaults.guidance_scale == 7.2
    assert model.ready
