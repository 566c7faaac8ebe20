"""Image-to-image and inpainting from a replica's loaded text-to-image pipeline.

diffusers' ``StableDiffusion3Img2ImgPipeline`` and ``StableDiffusion3InpaintPipeline`` are built
from the loaded pipeline's own modules (transformer, text encoders, VAE, scheduler), so one
replica serves all three modes with no extra weights in memory. That is what ``from_pipe``
does, except that ``from_pipe`` then casts every shared module to one dtype (float32 unless told
otherwise), in place: it would undo the precision plan (FP8 transformer, 16-bit VAE) of the
text-to-image pipeline too. The constructors take the same modules and cast nothing.

Batching and identical results. The engine hands the pipeline what it would compute itself,
prepared per member with the shapes of a lone request:

- the init image is VAE-encoded here, once per member (a batch of one), and the latent
  distribution's mode is used rather than a sample, so the encoding draws no random numbers;
  the pipeline takes a 16-channel tensor as latents already and does not encode it again;
- one CPU generator per image (seed + i), in member order: the pipeline draws row r's noise
  from generator r alone, whatever else the batch holds;
- the mask is binarized and resized per row by the pipeline, an elementwise operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import (
    StableDiffusion3Img2ImgPipeline,
)
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_inpaint import (
    StableDiffusion3InpaintPipeline,
)
from PIL import Image

from engine.job import GenerationMode, GenerationSpec, InputImage


class ModePipelines:
    """The pipeline object for each mode, all over the same loaded components."""

    def __init__(self, text_to_image: StableDiffusion3Pipeline) -> None:
        self.text_to_image = text_to_image
        # Built on first use: cheap (no weights are copied), but a model that
        # never sees an image request need not build them at all.
        self._image_to_image: StableDiffusion3Img2ImgPipeline | None = None
        self._inpainting: StableDiffusion3InpaintPipeline | None = None

    def for_mode(self, mode: GenerationMode) -> StableDiffusion3Pipeline:
        """The pipeline that runs ``mode`` (typed as the base pipeline: same call protocol)."""
        if mode is GenerationMode.IMAGE_TO_IMAGE:
            if self._image_to_image is None:
                self._image_to_image = StableDiffusion3Img2ImgPipeline(
                    **self.text_to_image.components
                )
            pipe: Any = self._image_to_image
            return pipe
        if mode is GenerationMode.INPAINTING:
            if self._inpainting is None:
                self._inpainting = StableDiffusion3InpaintPipeline(**self.text_to_image.components)
            pipe = self._inpainting
            return pipe
        return self.text_to_image


def pixels_tensor(image: InputImage) -> torch.Tensor:
    """``image``'s pixels as a (1, channels, height, width) float tensor in [0, 1]."""
    array = np.frombuffer(image.pixels, dtype=np.uint8).reshape(
        image.height, image.width, image.channels
    )
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def encode_init_image(
    pipe: StableDiffusion3Pipeline, image: InputImage, device: torch.device
) -> torch.Tensor:
    """The init image's latents as the SD3 pipelines scale them: (1, 16, h, w)."""
    vae = pipe.vae
    pixels = pixels_tensor(image).to(device=device, dtype=vae.dtype) * 2.0 - 1.0
    latents = vae.encode(pixels).latent_dist.mode()
    scaled: torch.Tensor = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    return scaled


def image_call_arguments(
    pipe: StableDiffusion3Pipeline, specs: Sequence[GenerationSpec], device: torch.device
) -> dict[str, Any]:
    """The image-mode arguments of one pipeline call for ``specs`` (equal ``batch_key``), one
    row per image in member order."""
    first = specs[0]
    latents = []
    masks = []
    generators = []
    for spec in specs:
        assert spec.init_image is not None  # the batch key holds the mode
        encoded = encode_init_image(pipe, spec.init_image, device)
        latents.append(encoded.repeat(spec.num_images, 1, 1, 1))
        if spec.mask is not None:
            masks.append(pixels_tensor(spec.mask).repeat(spec.num_images, 1, 1, 1))
        generators += [torch.Generator("cpu").manual_seed(seed) for seed in spec.image_seeds()]
    image_latents = torch.cat(latents)
    arguments: dict[str, Any] = {
        "image": image_latents,
        "strength": first.strength,
        "generator": generators,
    }
    if first.mask is not None:
        arguments["mask_image"] = torch.cat(masks)
        # Only its shape matters to a 16-channel transformer (the pipeline blends the init
        # latents back outside the mask at every step); given, so the pipeline does not try to
        # mask latents with a pixel-sized mask.
        arguments["masked_image_latents"] = image_latents
    return arguments


def keep_unmasked(images: list[Image.Image], spec: GenerationSpec) -> list[Image.Image]:
    """Inpainting: the init image's own pixels wherever the mask is black (< 128).

    The pipeline keeps the unmasked region in latent space, but the VAE's round trip does not
    give back the input's pixels (and spreads colour across the mask's edge). Pasting the input
    back, as A1111's inpainting overlay does, makes "unmasked means unchanged" exact.
    """
    if spec.init_image is None or spec.mask is None:
        return images
    original = Image.frombytes(
        "RGB", (spec.init_image.width, spec.init_image.height), spec.init_image.pixels
    )
    mask = Image.frombytes("L", (spec.mask.width, spec.mask.height), spec.mask.pixels)
    # The same threshold as the pipeline's binarized mask: white repaints.
    repaint = mask.point(lambda value: 255 if value >= 128 else 0)
    return [Image.composite(image.convert("RGB"), original, repaint) for image in images]
