"""Encoding decoded images (results and previews) to PNG, JPEG or WEBP bytes."""

from __future__ import annotations

import io

from PIL import Image

from engine.job import EncodedImage, ImageFormat

_MIME_TYPES = {
    ImageFormat.PNG: "image/png",
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.WEBP: "image/webp",
}


def encode_image(
    image: Image.Image, image_format: ImageFormat, quality: int = 90, seed: int = 0
) -> EncodedImage:
    """Encodes ``image``; ``quality`` (1-100) applies to JPEG and WEBP, PNG is lossless.

    Encoding is deterministic (no timestamps or other metadata are written), so the same pixels
    always give the same bytes.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    buffer = io.BytesIO()
    if image_format is ImageFormat.PNG:
        rgb.save(buffer, format="PNG")
    elif image_format is ImageFormat.JPEG:
        rgb.save(buffer, format="JPEG", quality=_clamp_quality(quality))
    elif image_format is ImageFormat.WEBP:
        rgb.save(buffer, format="WEBP", quality=_clamp_quality(quality))
    else:
        raise ValueError(f"unsupported image format {image_format!r}")
    return EncodedImage(
        data=buffer.getvalue(),
        mime_type=_MIME_TYPES[image_format],
        width=rgb.width,
        height=rgb.height,
        seed=seed,
    )


def _clamp_quality(quality: int) -> int:
    # Requests are validated upstream; clamping keeps a stray 0 from meaning "worst possible".
    return min(100, max(1, quality))
