"""Where result images go besides (or instead of) the reply: a local folder or an S3 bucket.

``[server] output_store`` names the store: ``file:///var/pointillist/out`` (or a plain path) for
a local folder, ``s3://bucket/prefix`` for any S3-compatible store through boto3
(``output_s3_endpoint_url`` for MinIO, Ceph and the like; credentials the usual boto3 way).
Each image is stored under the SHA-256 of its bytes, so storing one twice is harmless and an
image served again (from the result cache, a replayed watch, GetJob) keeps its URL. With
``output_inline = false`` the reply carries the URL alone.

A store that fails never loses a result that can still be sent inline: the images go out without
URLs and the failure is logged. With ``output_inline = false`` there is nothing else to send,
and the request ends UNAVAILABLE (``OutputStoreError``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import weakref
from collections import OrderedDict
from typing import Protocol
from urllib.parse import urlsplit

from engine.job import EncodedImage, GenerationOutput

log = logging.getLogger("pointillist.output_store")

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_REMEMBERED = 4096  # names already stored, so replays do not store them again


class OutputStoreError(Exception):
    """The output store failed and the reply has no inline bytes to fall back on."""


class OutputStore(Protocol):
    """Keeps named blobs; returns the URL of each."""

    async def put(self, name: str, data: bytes, mime_type: str) -> str:
        """Store ``data`` as ``name`` (overwriting is harmless: names are content hashes)."""


class OutputPublisher:
    """Puts a result's images into ``store`` and fills in their URLs (and drops the bytes when
    ``inline`` is off)."""

    def __init__(self, store: OutputStore, inline: bool = True) -> None:
        self.store = store
        self.inline = inline
        self._urls: OrderedDict[str, str] = OrderedDict()
        # Single flight: deliveries of one result (its watchers, GetJob) that arrive while it is
        # being published await that one publish instead of hashing and uploading it again.
        self._flights: dict[int, asyncio.Future[GenerationOutput]] = {}

    async def publish(self, output: GenerationOutput) -> GenerationOutput:
        key = id(output)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._publish(output))
            self._flights[key] = flight
            # Kept while the result lives (so its id cannot be reused), and not a moment longer.
            weakref.finalize(output, self._flights.pop, key, None)
            flight.add_done_callback(lambda done: self._forget_failure(key, done))
        # Shielded: a caller that leaves must not cancel the publish the others await.
        return await asyncio.shield(flight)

    def _forget_failure(self, key: int, flight: asyncio.Future[GenerationOutput]) -> None:
        """A failed publish (raised, or fell back to the bare result) is tried again by the next
        delivery, not remembered; a remembered result would also keep itself alive."""
        failed = flight.cancelled() or flight.exception() is not None
        if (failed or id(flight.result()) == key) and self._flights.get(key) is flight:
            del self._flights[key]

    async def _publish(self, output: GenerationOutput) -> GenerationOutput:
        try:
            images = [await self._stored(image) for image in output.images]
        except Exception as exc:
            if not self.inline:
                raise OutputStoreError(f"the output store failed: {exc}") from exc
            log.warning(
                "output store failed (%s: %s): images sent inline only", type(exc).__name__, exc
            )
            return output
        return dataclasses.replace(output, images=tuple(images))

    async def _stored(self, image: EncodedImage) -> EncodedImage:
        # Off the event loop: about 4 ms per 6 MiB image (hashlib lets go of the GIL).
        digest = await asyncio.to_thread(_sha256, image.data)
        name = digest + EXTENSIONS.get(image.mime_type, ".bin")
        url = self._urls.get(name)
        if url is None:
            url = await self.store.put(name, image.data, image.mime_type)
            self._urls[name] = url
            if len(self._urls) > _REMEMBERED:
                self._urls.popitem(last=False)
        else:
            self._urls.move_to_end(name)
        return dataclasses.replace(image, url=url, data=image.data if self.inline else b"")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_output_store(location: str, s3_endpoint_url: str = "") -> OutputStore:
    """The store ``location`` names; ValueError when it names none."""
    parts = urlsplit(location)
    if parts.scheme == "s3":
        from server.s3_output_store import S3OutputStore

        if not parts.netloc:
            raise ValueError(f"output_store {location!r}: s3:// needs a bucket")
        return S3OutputStore(parts.netloc, parts.path.strip("/"), s3_endpoint_url or None)
    from server.file_output_store import FileOutputStore

    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"output_store {location!r}: file:// URLs name a local path")
        return FileOutputStore(parts.path)
    if parts.scheme == "" and location:
        return FileOutputStore(location)
    raise ValueError(
        f"output_store {location!r}: use file:///a/folder, a path or s3://bucket/prefix"
    )
