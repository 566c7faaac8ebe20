"""A request's input images (init image, mask): fetched, checked and decoded before queueing.

Checks, in order, each a BadRequest naming the field:

- the source: bytes, or a reference to an image of a finished job the caller may see (another
  caller's job is NOT_FOUND, as ``server.job_access`` answers everywhere);
- the header alone (``Image.open`` reads no pixel data): a format other than PNG, JPEG or WebP,
  or a size, after EXIF orientation, larger than the model's max_width x max_height, is refused
  before a single pixel is decoded, which is what stops a decompression bomb (a small file
  that claims gigapixels);
- the size rule: the output has the init image's size, so each side must be a multiple of 16
  and at least 64; a request's width and height must be 0 or that size; the mask must have it
  too. Nothing is resized: a silent resize would change what the caller asked to keep.

Pixels are decoded once, oriented (``ImageOps.exif_transpose``), converted to RGB (the init
image, alpha dropped) or grey (the mask), and hashed: the hash goes into the result cache key
and the reproducibility record.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.config import ModelConfig
from engine.job import InputImage
from pointillist.v1 import generation_pb2 as pb
from scheduler.interface import Scheduler
from server.job_access import visible_job
from server.validation import MIN_SIDE, SIDE_MULTIPLE, FieldViolation, InvalidRequestError

FORMATS = ("PNG", "JPEG", "WEBP")
DEFAULT_STRENGTH = 0.8
# EXIF orientations 5 to 8 turn the picture by 90 degrees: width and height swap.
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImageInputs:
    """What a request starts from; ``init_image`` None means text-to-image."""

    init_image: InputImage | None = None
    mask: InputImage | None = None
    strength: float = 1.0


def read_inputs(
    params: pb.GenerationParameters,
    model: ModelConfig,
    scheduler: Scheduler,
    prefix: str = "parameters.",
) -> ImageInputs:
    """The request's input images, checked and decoded; raises InvalidRequestError (or
    UnknownJobError for a job reference the caller may not see)."""
    has_image = params.HasField("init_image")
    has_mask = params.HasField("mask")
    bad: list[FieldViolation] = []
    if params.HasField("strength"):
        strength = params.strength
        if not has_image:
            bad.append(FieldViolation(prefix + "strength", "needs init_image"))
        elif not (math.isfinite(strength) and 0.0 < strength <= 1.0):
            bad.append(FieldViolation(prefix + "strength", f"must be in (0, 1], got {strength}"))
    else:
        strength = DEFAULT_STRENGTH
    if has_mask and not has_image:
        bad.append(FieldViolation(prefix + "mask", "needs init_image (the image to inpaint)"))
    if bad or not has_image:
        if bad:
            raise InvalidRequestError(bad)
        return ImageInputs()
    init_field = prefix + "init_image"
    init = _decode(params.init_image, init_field, model, scheduler, "RGB")
    for name in ("width", "height"):
        asked = getattr(params, name)
        actual = init.width if name == "width" else init.height
        if asked not in (0, actual):
            bad.append(
                FieldViolation(
                    prefix + name,
                    f"must be 0 or the init image's {name} ({actual}): the output has the "
                    f"init image's size, got {asked}",
                )
            )
    mask = None
    if has_mask:
        mask = _decode(params.mask, prefix + "mask", model, scheduler, "L")
        if (mask.width, mask.height) != (init.width, init.height):
            bad.append(
                FieldViolation(
                    prefix + "mask",
                    f"is {mask.width}x{mask.height}; it must have the init image's size "
                    f"({init.width}x{init.height})",
                )
            )
    if bad:
        raise InvalidRequestError(bad)
    return ImageInputs(init_image=init, mask=mask, strength=float(strength))


def _decode(
    source: pb.InputImage, field: str, model: ModelConfig, scheduler: Scheduler, mode: str
) -> InputImage:
    data = _source_bytes(source, field, scheduler)
    limits = model.limits

    def refuse(description: str) -> InvalidRequestError:
        return InvalidRequestError([FieldViolation(field, description)])

    try:
        with warnings.catch_warnings():
            # PIL warns (and raises past twice its limit) on huge headers; ours comes first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        # PIL's own header check, past twice its pixel limit: far beyond any model's.
        raise refuse(
            f"claims more pixels than model {model.id!r} takes (up to "
            f"{limits.max_width}x{limits.max_height}): a decompression bomb"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise refuse("is not a PNG, JPEG or WebP image") from None
    with opened:
        width, height = opened.size
        fits = (width <= limits.max_width and height <= limits.max_height) or (
            height <= limits.max_width and width <= limits.max_height
        )
        # Reading EXIF decodes a PNG whole (PIL loads it to find a late eXIf chunk), so the
        # header's size must fit one way or the other first.
        if fits and opened.getexif().get(_ORIENTATION_TAG) in _TRANSPOSED:
            width, height = height, width
        if width > limits.max_width or height > limits.max_height:
            raise refuse(
                f"is {width}x{height}; model {model.id!r} takes images up to "
                f"{limits.max_width}x{limits.max_height}"
            )
        if width % SIDE_MULTIPLE or height % SIDE_MULTIPLE or min(width, height) < MIN_SIDE:
            raise refuse(
                f"is {width}x{height}; each side must be a multiple of {SIDE_MULTIPLE} and at "
                f"least {MIN_SIDE} (images are not resized: crop or pad it)"
            )
        try:
            oriented = ImageOps.exif_transpose(opened)
            pixels = oriented.convert(mode)
        except (OSError, ValueError, SyntaxError):
            raise refuse("could not be decoded (truncated or corrupt)") from None
    raw = pixels.tobytes()
    channels = len(pixels.getbands())
    return InputImage(raw, pixels.width, pixels.height, channels, hashlib.sha256(raw).hexdigest())


def _source_bytes(source: pb.InputImage, field: str, scheduler: Scheduler) -> bytes:
    kind = source.WhichOneof("source")
    if kind == "data":
        if not source.data:
            raise InvalidRequestError([FieldViolation(field + ".data", "is empty")])
        return source.data
    if kind != "job_image":
        raise InvalidRequestError(
            [FieldViolation(field, "set data (image bytes) or job_image (a job's image)")]
        )
    reference = source.job_image
    job = visible_job(scheduler, reference.job_id)  # NOT_FOUND unless the caller may see it
    result = job.result
    if result is None:
        raise InvalidRequestError(
            [
                FieldViolation(
                    field + ".job_image.job_id", f"job has no result (it is {job.state.value})"
                )
            ]
        )
    if reference.index >= len(result.images):
        raise InvalidRequestError(
            [
                FieldViolation(
                    field + ".job_image.index",
                    f"the job has {len(result.images)} images, got index {reference.index}",
                )
            ]
        )
    return result.images[reference.index].data
