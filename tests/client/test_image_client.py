"""The Python client and the CLI send init images and masks (paths, bytes, PIL images, job
references) to a real demo server."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointillist import Client
from pointillist.cli import main
from pointillist.conversion import build_parameters
from pointillist.image_inputs import JobImage


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


def test_client_generate_takes_an_image_and_a_job_reference(demo_server) -> None:
    with Client(demo_server.address, timeout=120) as client:
        first = client.generate("a cat", image=noise(96, 64), strength=0.5, steps=4, seed=1)
        assert (first.images[0].width, first.images[0].height) == (96, 64)

        again = client.generate(
            "a cat", image=JobImage(first.job_id, 0), strength=0.25, steps=4, seed=1
        )
        assert (again.images[0].width, again.images[0].height) == (96, 64)


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
    result = np.asarray(Image.open(out).convert("RGB")).astype(float)
    original = np.asarray(Image.open(source).convert("RGB")).astype(float)
    assert np.abs(result - original)[:, :32].mean() < 1.0  # kept outside the mask
