"""Latent previews and image encoding, without a pipeline."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from engine.image_encoding import encode_image
from engine.job import ImageFormat
from engine.preview import flow_x0_estimate, latents_to_images


def test_previews_keep_the_aspect_ratio_within_max_size() -> None:
    latents = torch.randn(3, 16, 16, 32)  # a 256x128 image, three images
    pictures = latents_to_images(latents, max_size=100, width=256, height=128)
    assert [picture.size for picture in pictures] == [(100, 50)] * 3
    assert all(picture.mode == "RGB" for picture in pictures)


def test_zero_latents_show_the_bias_colour() -> None:
    (picture,) = latents_to_images(torch.zeros(1, 16, 2, 2), max_size=16, width=16, height=16)
    # bias (0.2394, 0.2135, 0.1925) mapped from [-1, 1] to [0, 255]
    assert picture.getpixel((0, 0)) == (158, 155, 152)


def test_flow_x0_estimate_inverts_an_euler_step() -> None:
    clean, noise = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    before, after = 0.8, 0.6
    # Flow matching: x_sigma = (1 - sigma) * clean + sigma * noise, velocity = noise - clean.
    x_before = (1 - before) * clean + before * noise
    x_after = (1 - after) * clean + after * noise
    assert torch.allclose(flow_x0_estimate(x_after, x_before, before, after), clean, atol=1e-5)
    # At the last step the latents are the estimate.
    assert flow_x0_estimate(x_after, x_before, 0.2, 0.0).equal(x_after)


@pytest.mark.parametrize("image_format", list(ImageFormat))
def test_encoding_is_deterministic_and_decodable(image_format: ImageFormat) -> None:
    picture = Image.new("RGB", (20, 10), (200, 30, 90))
    first = encode_image(picture, image_format, quality=50, seed=9)
    second = encode_image(picture, image_format, quality=50, seed=9)
    assert first == second
    assert first.seed == 9 and (first.width, first.height) == (20, 10)
    assert Image.open(io.BytesIO(first.data)).size == (20, 10)
