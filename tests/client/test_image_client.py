"""The Python client and the CLI send init images and masks (paths, bytes, PIL images, job
references) to a real demo server."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointillist import Client, GenerationMode
from pointillist.cli import main
from pointillist.conversion import build_parameters, parameters_from_proto, result_from_proto
from pointillist.image_inputs import JobImage
from pointillist.v1 import generation_pb2 as pb


def noise(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_every_kind_of_source_becomes_the_same_upload(tmp_path: Path) -> None:
    picture = noise()
    path = tmp_path / "in.png"
    picture.save(path)
    from_path = build_parameters("x", image=path, strength=0.5)
    from_bytes = build_parameters("x", image=path.read_bytes())

    assert from_path.init_image.data == from_bytes.init_image.data == path.read_bytes()
    assert from_path.strength == 0.5 and not from_bytes.HasField("strength")
    from_pil = build_parameters("x", image=picture, mask=JobImage("abc", 1))
    assert Image.open(io.BytesIO(from_pil.init_image.data)).tobytes() == (picture.tobytes())
    assert (from_pil.mask.job_image.job_id, from_pil.mask.job_image.index) == ("abc", 1)
    with pytest.raises(ValueError, match="image"):
        build_parameters("x", image=12)  # type: ignore[arg-type]


def test_the_typed_record_has_the_mode_the_strength_and_the_input_hashes() -> None:
    parameters = pb.GenerationParameters(prompt="x", strength=0.25)
    record = pb.Reproducibility(
        model_id="demo",
        parameters=parameters,
        mode=pb.GENERATION_MODE_INPAINTING,
        init_image_sha256="ab" * 32,
        mask_sha256="cd" * 32,
    )
    typed = result_from_proto("job", pb.GenerationResult(reproducibility=record)).reproducibility

    assert typed.mode is GenerationMode.INPAINTING
    assert (typed.strength, typed.init_image_sha256, typed.mask_sha256) == (
        0.25,
        "ab" * 32,
        "cd" * 32,
    )
    assert parameters_from_proto(parameters).strength == 0.25
    # Text-to-image: no strength, no hashes (the wire's empty strings read as None).
    text = pb.Reproducibility(model_id="demo", mode=pb.GENERATION_MODE_TEXT_TO_IMAGE)
    plain = result_from_proto("job", pb.GenerationResult(reproducibility=text)).reproducibility
    assert plain.mode is GenerationMode.TEXT_TO_IMAGE
    assert (plain.strength, plain.init_image_sha256, plain.mask_sha256) == (None, None, None)
    assert parameters_from_proto(pb.GenerationParameters(prompt="x")).strength is None
    # A record from an older server says nothing about the mode.
    old = result_from_proto("job", pb.GenerationResult()).reproducibility
    assert old.mode is GenerationMode.UNSPECIFIED


def sha256_of(picture: Image.Image) -> str:
    return hashlib.sha256(picture.tobytes()).hexdigest()


def test_client_generate_takes_an_image_and_a_job_reference(demo_server) -> None:
    picture = noise(96, 64)
    with Client(demo_server.address, timeout=120) as client:
        first = client.generate("a cat", image=picture, strength=0.5, steps=4, seed=1)
        assert (first.images[0].width, first.images[0].height) == (96, 64)
        record = first.reproducibility
        assert record.mode is GenerationMode.IMAGE_TO_IMAGE and record.strength == 0.5
        assert record.init_image_sha256 == sha256_of(picture) and record.mask_sha256 is None

        again = client.generate(
            "a cat", image=JobImage(first.job_id, 0), strength=0.25, steps=4, seed=1
        )
        assert (again.images[0].width, again.images[0].height) == (96, 64)
        reused = Image.open(io.BytesIO(first.images[0].data)).convert("RGB")
        assert again.reproducibility.init_image_sha256 == sha256_of(reused)

        text = client.generate("a cat", width=64, height=64, steps=2, seed=1).reproducibility
        assert text.mode is GenerationMode.TEXT_TO_IMAGE and text.init_image_sha256 is None


def test_cli_generate_with_image_strength_and_mask(demo_server, tmp_path: Path) -> None:
    source, mask, out = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png"
    noise().save(source)
    grey = np.zeros((64, 64), dtype=np.uint8)
    grey[:, 32:] = 255
    Image.fromarray(grey).save(mask)

    code = main(
        [
            "generate",
            "a cat",
            "--server",
            demo_server.address,
            "--image",
            str(source),
            "--strength",
            "0.6",
            "--mask",
            str(mask),
            "--steps",
            "4",
            "-o",
            str(out),
        ]
    )

    assert code == 0
    with Client(demo_server.address, timeout=120) as client:
        inpainted = client.generate(
            "a cat", image=source, mask=mask, strength=0.6, steps=4, seed=1
        ).reproducibility
    assert inpainted.mode is GenerationMode.INPAINTING
    assert inpainted.mask_sha256 == hashlib.sha256(grey.tobytes()).hexdigest()
    result = np.asarray(Image.open(out).convert("RGB")).astype(float)
    original = np.asarray(Image.open(source).convert("RGB")).astype(float)
    assert np.abs(result - original)[:, :32].mean() < 1.0  # kept outside the mask
