"""A finished result as bytes for a result store, and back, without pickle.

A shared store (Redis) is reachable by others, so what comes back from it is parsed, never
unpickled: a JSON header (images' metadata and sizes, timings, provenance) followed by the images'
bytes, each exactly as the engine encoded it.
"""

from __future__ import annotations

import dataclasses
import json
import struct

from engine.job import (
    ComponentPrecision,
    DeviceInfo,
    EncodedImage,
    GenerationOutput,
    Provenance,
    Timings,
)

FORMAT_VERSION = 1
_HEADER_LENGTH = struct.Struct(">I")


class CorruptEntryError(ValueError):
    """Bytes from the store are not a result this codec wrote."""


def encode_output(output: GenerationOutput) -> bytes:
    """The result's images, timings and provenance as one byte string."""
    provenance = output.provenance
    header = {
        "version": FORMAT_VERSION,
        "images": [
            {
                "size": len(image.data),
                "mime_type": image.mime_type,
                "width": image.width,
                "height": image.height,
                "seed": image.seed,
            }
            for image in output.images
        ],
        "timings": dataclasses.asdict(output.timings),
        "provenance": {
            "model_id": provenance.model_id,
            "weights_revision": provenance.weights_revision,
            "precisions": [dataclasses.asdict(p) for p in provenance.precisions],
            "scheduler": provenance.scheduler,
            "library_versions": provenance.library_versions,
            "device": dataclasses.asdict(provenance.device),
        },
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return b"".join(
        [_HEADER_LENGTH.pack(len(encoded)), encoded, *(image.data for image in output.images)]
    )


def decode_output(data: bytes) -> GenerationOutput:
    """The result ``encode_output`` wrote; raises CorruptEntryError for anything else."""
    try:
        (length,) = _HEADER_LENGTH.unpack_from(data)
        start = _HEADER_LENGTH.size
        header = json.loads(data[start : start + length])
        if header["version"] != FORMAT_VERSION:
            raise CorruptEntryError(f"format version {header['version']}")
        offset = start + length
        images = []
        for item in header["images"]:
            end = offset + int(item["size"])
            if end > len(data):
                raise CorruptEntryError("the images are cut short")
            images.append(
                EncodedImage(
                    data=data[offset:end],
                    mime_type=str(item["mime_type"]),
                    width=int(item["width"]),
                    height=int(item["height"]),
                    seed=int(item["seed"]),
                )
            )
            offset = end
        if offset != len(data):
            raise CorruptEntryError("bytes left over after the images")
        record = header["provenance"]
        provenance = Provenance(
            model_id=str(record["model_id"]),
            weights_revision=str(record["weights_revision"]),
            precisions=tuple(ComponentPrecision(**p) for p in record["precisions"]),
            scheduler=str(record["scheduler"]),
            library_versions={str(k): str(v) for k, v in record["library_versions"].items()},
            device=DeviceInfo(**record["device"]),
        )
        return GenerationOutput(
            images=tuple(images), timings=Timings(**header["timings"]), provenance=provenance
        )
    except CorruptEntryError:
        raise
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptEntryError(f"{type(exc).__name__}: {exc}") from exc
