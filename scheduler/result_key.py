"""The result cache's key: everything that decides a deterministic request's image bytes.

A request with an explicit seed makes the same bytes every time on the same weights, precision,
device kind and library versions (README: reproducibility). The key is a SHA-256 over all of
those and every generation parameter that reaches the pipeline or the image encoder. Preview
settings, priority and deadline are left out: they change what a stream shows on the way, never
the result.
"""

from __future__ import annotations

import hashlib
import json

from engine.job import GenerationSpec, LoadedModel, Provenance
from engine.library_versions import library_versions

KEY_PREFIX = "pointillist:result:v1:"


def result_key(spec: GenerationSpec, loaded: LoadedModel) -> str:
    """The cache key of ``spec`` run by replicas that loaded ``loaded``."""
    canonical: dict[str, object] = {
        "model": spec.model,
        "weights_revision": loaded.weights_revision,
        "precisions": [
            [p.component, p.weights, p.compute]
            for p in sorted(loaded.precisions, key=lambda p: p.component)
        ],
        "device": [loaded.device.kind, loaded.device.name],
        "libraries": library_versions(),
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt,
        "width": spec.width,
        "height": spec.height,
        "steps": spec.steps,
        "guidance_scale": repr(float(spec.guidance_scale)),
        "seed": spec.seed,
        "num_images": spec.num_images,
        "output_format": spec.output_format.value,
        "quality": spec.quality,
    }
    if spec.init_image is not None:
        # Image modes only, so text-to-image keys stay what they were.
        canonical["mode"] = spec.mode.value
        canonical["strength"] = repr(float(spec.strength))
        canonical["init_image_sha256"] = spec.init_image.sha256
        canonical["mask_sha256"] = spec.mask.sha256 if spec.mask is not None else ""
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def produced_by(provenance: Provenance, loaded: LoadedModel) -> bool:
    """Whether a result was made by what its key promises (so it may be stored under it).

    A model whose replicas run on different kinds of device (``device = "auto"``) could make a
    result on one that the key, taken from another, does not describe: such a result is not
    stored.
    """
    return (
        provenance.weights_revision == loaded.weights_revision
        and sorted(provenance.precisions, key=lambda p: p.component)
        == sorted(loaded.precisions, key=lambda p: p.component)
        and (provenance.device.kind, provenance.device.name)
        == (loaded.device.kind, loaded.device.name)
        and provenance.library_versions == library_versions()
    )
