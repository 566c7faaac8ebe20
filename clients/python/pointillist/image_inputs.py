"""Input images for image-to-image and inpainting: a path, bytes, a PIL image, or an image of an
earlier job (``JobImage``), turned into the request's ``InputImage``.

Pillow is not a dependency of the client: a PIL image is recognised by its ``save`` method and
sent as PNG (lossless, so the server sees exactly its pixels).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Protocol

from pointillist.v1 import generation_pb2 as pb


class _Saveable(Protocol):
    def save(self, fp: Any, format: str | None = None) -> None: ...


@dataclass(frozen=True)
class JobImage:
    """Image ``index`` of an earlier job of the same caller: sent by reference, not uploaded."""

    job_id: str
    index: int = 0


ImageSource = str | os.PathLike[str] | bytes | JobImage | _Saveable


def input_image(source: ImageSource, name: str) -> pb.InputImage:
    """The ``InputImage`` for ``source``; ValueError names ``name`` when it cannot be sent."""
    if isinstance(source, JobImage):
        if source.index < 0:
            raise ValueError(f"{name}: a job image index is >= 0; got {source.index}")
        return pb.InputImage(
            job_image=pb.JobImageReference(job_id=source.job_id, index=source.index)
        )
    if isinstance(source, bytes):
        return pb.InputImage(data=source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return pb.InputImage(data=file.read())
    if hasattr(source, "save"):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return pb.InputImage(data=buffer.getvalue())
    raise ValueError(f"{name}: expected a path, bytes, a PIL image or a JobImage")
