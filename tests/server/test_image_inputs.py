"""Image-to-image and inpainting through a real server: steps, the mask, job references and
every bad input refused before queueing with the field that is wrong."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import zlib
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from PIL import Image

from engine.config import demo_model_config
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from server.auth import ApiKey, Role, hash_key
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.server.test_validation_errors import call_with, violations_of


def noise_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(array: np.ndarray, image_format: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **save)
    return buffer.getvalue()


def right_half_mask(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, width // 2 :] = 255
    return encoded(mask)


def stream(stub: pb_grpc.GenerationServiceStub, metadata=None, **fields: object):
    values: dict[str, object] = {"prompt": "a cat", "steps": 8, "seed": 5}
    values.update(fields)
    request = pb.StreamGenerateRequest(parameters=pb.GenerationParameters(**values))  # type: ignore[arg-type]
    return list(stub.StreamGenerate(request, timeout=120, metadata=metadata))


def decoded(image: pb.Image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))


@pytest.mark.parametrize(("strength", "ran"), [(1.0, 8), (0.5, 4)])
def test_img2img_runs_steps_times_strength_and_progress_says_so(stub, strength, ran):
    source = noise_rgb(96, 64)
    events = stream(stub, init_image=pb.InputImage(data=encoded(source)), strength=strength)

    progress = [e.progress for e in events if e.HasField("progress")]
    assert [p.step for p in progress] == list(range(1, ran + 1))
    assert {p.total_steps for p in progress} == {ran}
    result = events[-1].result
    (image,) = result.images
    assert (image.width, image.height) == (96, 64)  # the init image's size
    record = result.reproducibility
    assert record.mode == pb.GENERATION_MODE_IMAGE_TO_IMAGE
    assert record.init_image_sha256 == hashlib.sha256(source.tobytes()).hexdigest()
    assert record.parameters.strength == strength and record.mask_sha256 == ""


def test_inpainting_keeps_the_unmasked_pixels_and_repaints_the_rest(stub):
    source = noise_rgb(64, 64, seed=3)
    events = stream(
        stub,
        init_image=pb.InputImage(data=encoded(source)),
        mask=pb.InputImage(data=right_half_mask(64, 64)),
        strength=0.75,
    )
    result = events[-1].result
    difference = np.abs(decoded(result.images[0]).astype(float) - source.astype(float))

    kept, repainted = difference[:, :32].mean(), difference[:, 32:].mean()
    assert kept < 1.0 < 20.0 < repainted, (kept, repainted)
    assert result.reproducibility.mode == pb.GENERATION_MODE_INPAINTING
    assert result.reproducibility.mask_sha256


def test_exif_orientation_is_applied(stub):
    # Stored 64x96, tagged "rotate 90": the picture is 96 wide and 64 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(noise_rgb(64, 96), "JPEG", exif=exif.tobytes())
    events = stream(stub, init_image=pb.InputImage(data=data), strength=0.5, steps=2)

    assert (events[-1].result.images[0].width, events[-1].result.images[0].height) == (96, 64)


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header says width x height: a decompression bomb's header."""
    real = encoded(np.zeros((1, 1, 3), dtype=np.uint8))
    ihdr = struct.pack(">II", width, height) + real[24:29]
    chunk = b"IHDR" + ihdr
    header = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return real[:8] + header + real[33:]


IMAGE = pb.InputImage(data=encoded(noise_rgb(64, 64)))


@pytest.mark.parametrize(
    ("fields", "bad_field", "words"),
    [
        ({"init_image": pb.InputImage(data=b"GIF89a not here")}, "parameters.init_image", "PNG"),
        (
            {"init_image": pb.InputImage(data=encoded(noise_rgb(64, 64), "GIF"))},
            "parameters.init_image",
            "not a PNG, JPEG or WebP",
        ),
        (
            {"init_image": pb.InputImage(data=png_claiming(100_000, 100_000))},
            "parameters.init_image",
            "decompression bomb",
        ),
        (
            # 12 megapixels in a few bytes: refused from the header, never decoded.
            {"init_image": pb.InputImage(data=png_claiming(4000, 3000))},
            "parameters.init_image",
            "is 4000x3000",
        ),
        (
            {"init_image": pb.InputImage(data=encoded(noise_rgb(528, 64)))},
            "parameters.init_image",
            "up to 512x512",
        ),
        (
            {"init_image": pb.InputImage(data=encoded(noise_rgb(72, 64)))},
            "parameters.init_image",
            "multiple of 16",
        ),
        ({"init_image": pb.InputImage(data=b"")}, "parameters.init_image.data", "empty"),
        (
            {"init_image": IMAGE, "mask": pb.InputImage(data=right_half_mask(80, 64))},
            "parameters.mask",
            "init image's size (64x64)",
        ),
        ({"init_image": IMAGE, "strength": 0.0}, "parameters.strength", "(0, 1]"),
        ({"init_image": IMAGE, "strength": 1.5}, "parameters.strength", "(0, 1]"),
        ({"init_image": IMAGE, "width": 128}, "parameters.width", "init image's width (64)"),
        ({"strength": 0.5}, "parameters.strength", "needs init_image"),
        ({"mask": pb.InputImage(data=right_half_mask(64, 64))}, "parameters.mask", "needs"),
        (
            {"init_image": pb.InputImage(job_image=pb.JobImageReference(job_id=""))},
            "parameters.init_image",
            "",
        ),
    ],
)
def test_each_bad_image_input_is_refused_with_its_field(stub, fields, bad_field, words):
    values = {"width": 0, "height": 0, **fields}
    error = call_with(stub, **values)

    if bad_field == "parameters.init_image" and not words:
        assert error.code() == grpc.StatusCode.NOT_FOUND  # no job has the empty id
        return
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in violations_of(error)[bad_field]


ALICE, BOB = "pk_alice-images-0123456789", "pk_bob-images-9876543210"


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerThread]:
    keys = (ApiKey("alice", Role.USER, hash_key(ALICE)), ApiKey("bob", Role.USER, hash_key(BOB)))
    server = ServerThread(demo_settings(api_keys=keys)).start()
    yield server
    server.stop()


def test_a_reference_to_the_callers_own_job_works_and_anothers_is_not_found(keyed_server):
    with grpc.insecure_channel(keyed_server.address) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        alice = [("authorization", f"Bearer {ALICE}")]
        bob = [("authorization", f"Bearer {BOB}")]
        first = stream(stub, alice, width=64, height=64, num_images=2, steps=2)
        job_id = first[-1].job_id
        reference = pb.InputImage(job_image=pb.JobImageReference(job_id=job_id, index=1))

        again = stream(stub, alice, init_image=reference, strength=0.5, steps=2)
        source = decoded(first[-1].result.images[1])
        record = again[-1].result.reproducibility
        assert record.init_image_sha256 == hashlib.sha256(source.tobytes()).hexdigest()

        with pytest.raises(grpc.RpcError) as caught:
            stream(stub, bob, init_image=reference, strength=0.5, steps=2)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        out_of_range = pb.InputImage(job_image=pb.JobImageReference(job_id=job_id, index=2))
        with pytest.raises(grpc.RpcError) as caught:
            stream(stub, alice, init_image=out_of_range, strength=0.5, steps=2)
        index_field = "parameters.init_image.job_image.index"
        assert "has 2 images" in violations_of(caught.value)[index_field]


def test_a_request_over_its_models_max_request_bytes_is_resource_exhausted():
    model = demo_model_config()
    small = dataclasses.replace(
        model,
        device="cpu",
        limits=dataclasses.replace(model.limits, max_request_bytes=20_000),
    )
    server = ServerThread(demo_settings(models=(small,))).start()
    try:
        assert server.settings.request_limit() == 20_000  # gRPC's own cap follows the model's
        # Over the transport cap: gRPC refuses it itself, as before.
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GenerationServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stream(stub, init_image=pb.InputImage(data=encoded(noise_rgb(128, 128))))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            (info,) = stub.ListModels(pb.ListModelsRequest(), timeout=10).models
            assert info.limits.max_request_bytes == 20_000
    finally:
        server.stop()
