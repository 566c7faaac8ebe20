"""Writes a version 1 ``pointillist quantize`` folder (optimum-quanto), as older releases did.

The engine no longer writes this format but still reads it; tests make one here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from safetensors.torch import save_file

from engine import fp8
from engine.fp8_checkpoint import (
    FORMAT,
    MARKER_FILE,
    QMAP_FILE,
    QUANTO_WEIGHTS_FILE,
    STORAGE_DTYPE,
    split_tied,
)
from engine.loading import load_pipeline, locate_source
from engine.precision import FP8_COMPONENTS


def write_quanto_folder(source: str, dest: Path) -> None:
    """``source`` quantized with quanto qfloat8 and saved in the version 1 layout."""
    loaded = load_pipeline(locate_source(source), STORAGE_DTYPE)
    pipe = loaded.pipe
    quantized: dict[str, torch.nn.Module] = {}
    for name in FP8_COMPONENTS:
        module = getattr(pipe, name, None)
        if module is not None:
            fp8.quantize_fp8(module)
            quantized[name] = module
    rest = StableDiffusion3Pipeline(**{**pipe.components, **dict.fromkeys(quantized)})
    rest.save_pretrained(dest, safe_serialization=True)
    model_index = json.loads((dest / "model_index.json").read_text())
    aliases: dict[str, dict[str, str]] = {}
    for name, module in quantized.items():
        folder = dest / name
        folder.mkdir()
        # Any: diffusers and transformers modules save their configs differently.
        config: Any = module.config
        if isinstance(module, ModelMixin):
            module.save_config(folder)
        else:
            config.save_pretrained(folder)
        kept, aliases[name] = split_tied(module.state_dict())
        save_file(kept, str(folder / QUANTO_WEIGHTS_FILE), metadata={"format": "pt"})
        qmap = fp8.fp8_quantization_map(module)
        (folder / QMAP_FILE).write_text(json.dumps(qmap, indent=2, sort_keys=True))
        model_index[name] = [type(module).__module__.split(".")[0], type(module).__name__]
    (dest / "model_index.json").write_text(json.dumps(model_index, indent=2, sort_keys=True))
    marker = {
        "format": FORMAT,
        "format_version": 1,
        "quantized_components": sorted(quantized),
        "source": source,
        "source_revision": loaded.weights_revision,
        "aliases": aliases,
    }
    (dest / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
