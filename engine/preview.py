"""Cheap previews of the latents while denoising: a linear projection to RGB, no VAE.

SD3's 16 latent channels map almost linearly to RGB; the factors below are the ones ComfyUI
(``comfy/latent_formats.py``, class SD3) uses for its latent previews, applied to the latents in
the sampler's (scaled and shifted) space. One small matmul per step instead of a VAE decode.
"""

from __future__ import annotations

import torch
from PIL import Image

SD3_LATENT_RGB_FACTORS = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_LATENT_RGB_BIAS = (0.2394, 0.2135, 0.1925)


def flow_x0_estimate(
    latents: torch.Tensor, previous: torch.Tensor, sigma_before: float, sigma_after: float
) -> torch.Tensor:
    """The clean-image estimate after one flow-matching Euler step, from its two latents.

    An Euler step is ``x_after = x_before + (sigma_after - sigma_before) * v`` and the flow's
    clean estimate is ``x0 = x_after - sigma_after * v``; recovering ``v`` from the two latents
    gives a preview that shows the picture from the first steps instead of noise. At the last
    step (``sigma_after == 0``) it is the latents themselves.
    """
    if sigma_after == sigma_before:
        return latents
    velocity = (latents.float() - previous.float()) / (sigma_after - sigma_before)
    return latents.float() - sigma_after * velocity


def latents_to_images(
    latents: torch.Tensor, max_size: int, width: int, height: int
) -> list[Image.Image]:
    """One RGB preview per latent in the batch, at most ``max_size`` pixels on its longest side.

    The preview keeps the final image's aspect ratio and is never larger than the final image.
    """
    factors = torch.tensor(SD3_LATENT_RGB_FACTORS, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(SD3_LATENT_RGB_BIAS, dtype=torch.float32, device=latents.device)
    # (batch, 16, h, w) -> (batch, h, w, 3), then ComfyUI's [-1, 1] -> [0, 255] mapping.
    rgb = torch.nn.functional.linear(latents.float().movedim(1, -1), factors.t(), bias)
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    scale = min(1.0, max_size / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return [Image.fromarray(array).resize(size, Image.Resampling.BILINEAR) for array in pixels]
