"""FP8 checkpoints: folders written by ``pointillist quantize``, read back without 16-bit weights.

Quantizing at load time first materializes the 16-bit transformer, so it does not lower a
replica's load peak (6.5 GB RSS for an SD3.5-Medium-sized transformer, above the 5.4 GB of the
bf16 one, see FACTS.md). A folder written here is loaded the other way round: each FP8
component is built on the meta device from its config and its parameters are assigned
straight from the FP8 state dict.

Layout of a folder (format version 2, torchao)::

    model_index.json, scheduler/, tokenizer*/, text_encoder/, text_encoder_2/, vae/
        the 16-bit components, as diffusers ``save_pretrained`` writes them (bf16)
    transformer/ and text_encoder_3/ (when the source has T5)
        config.json               the module's own config (diffusers or transformers)
        fp8-torchao.safetensors   its state dict: every Linear weight as a torchao Float8Tensor
                                  flattened to its FP8 data and fp32 row scales (the header's
                                  metadata describes them), other tensors bf16
    pointillist_fp8.json          the marker: format version, FP8 components, source, revision

The FP8 weights are weight-only (torchao builds only that mode on the CPU, where ``quantize``
runs); on a GPU with FP8 tensor cores the precision plan turns the transformer into W8A8 at
load, layer by layer (engine/fp8_torchao.py ``requantize_fp8``).

Version 1 folders (optimum-quanto, ``fp8-quanto.safetensors`` and ``quanto_qmap.json``) are
still read, through quanto's ``requantize``; the precision reason says to re-run
``pointillist quantize`` for a torchao folder.

The marker is written last, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine import fp8, fp8_torchao
from engine.library_versions import library_versions
from engine.precision import FP8_COMPONENTS

MARKER_FILE = "pointillist_fp8.json"
FORMAT = "pointillist-fp8"
FORMAT_VERSION = 2
# Versions this engine reads, and the FP8 library each was written with.
BACKENDS = {1: "quanto", 2: "torchao"}
WEIGHTS_FILE = "fp8-torchao.safetensors"
QUANTO_WEIGHTS_FILE = "fp8-quanto.safetensors"
QMAP_FILE = "quanto_qmap.json"
# The 16-bit type the folder stores: SD3.5 is trained and published in bf16.
STORAGE_DTYPE = torch.bfloat16
# Libraries a folder may name for its FP8 components' classes (the index is read from disk).
_LIBRARIES = ("diffusers", "transformers")


@dataclass(frozen=True)
class Fp8Marker:
    """The marker of an FP8 folder."""

    format_version: int
    quantized_components: tuple[str, ...]
    source: str
    source_revision: str
    # component -> {dropped state-dict key: key holding the same tensor} (tied weights).
    aliases: dict[str, dict[str, str]]

    @property
    def backend(self) -> str:
        """The FP8 library the folder was written with: "torchao", or "quanto" (version 1)."""
        return BACKENDS[self.format_version]


def read_marker(folder: Path) -> Fp8Marker | None:
    """The folder's marker, or None for a plain diffusers folder.

    Raises ValueError for a marker of another format or a newer version.
    """
    path = folder / MARKER_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    if raw.get("format") != FORMAT or raw.get("format_version") not in BACKENDS:
        raise ValueError(
            f"{path} is format {raw.get('format')!r} version {raw.get('format_version')!r}; "
            f"this engine reads {FORMAT!r} versions {sorted(BACKENDS)}: re-run "
            "`pointillist quantize SOURCE DEST` from the 16-bit source"
        )
    components = tuple(raw["quantized_components"])
    # They name subfolders to read: only the components this format quantizes.
    unknown = [name for name in components if name not in FP8_COMPONENTS]
    if unknown:
        raise ValueError(f"{path} names unknown FP8 components {unknown}")
    return Fp8Marker(
        format_version=raw["format_version"],
        quantized_components=components,
        source=raw["source"],
        source_revision=raw["source_revision"],
        aliases={name: dict(pairs) for name, pairs in raw.get("aliases", {}).items()},
    )


def quantize_checkpoint(source: str, dest: Path, revision: str | None = None) -> None:
    """Loads the pipeline from ``source``, stores its transformer (and T5) in FP8 under ``dest``.

    ``source`` is anything a model config accepts (``demo``, a local diffusers folder, a hub id).
    ``dest`` must not exist or be empty. Raises ``ModelLoadError`` when the source cannot be
    loaded or already is an FP8 folder, FileExistsError when ``dest`` holds files.
    """
    # Imported here: loading imports this module to read FP8 folders.
    from engine.loading import ModelLoadError, load_pipeline, locate_source

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; choose a new folder for the FP8 checkpoint")
    located = locate_source(source, revision)
    if located.fp8_components:
        raise ModelLoadError(f"{source} already is an FP8 checkpoint; nothing to quantize")
    loaded = load_pipeline(located, STORAGE_DTYPE)
    pipe = loaded.pipe

    quantized: dict[str, torch.nn.Module] = {}
    for name in FP8_COMPONENTS:
        module: torch.nn.Module | None = getattr(pipe, name, None)
        if module is not None:
            fp8_torchao.quantize_fp8(module, fp8_torchao.Fp8Mode.WEIGHT_ONLY)
            quantized[name] = module

    dest.mkdir(parents=True, exist_ok=True)
    # The 16-bit part: the same pipeline without the FP8 components, saved the diffusers way.
    rest = StableDiffusion3Pipeline(**{**pipe.components, **dict.fromkeys(quantized)})
    rest.save_pretrained(dest, safe_serialization=True)

    model_index = json.loads((dest / "model_index.json").read_text())
    aliases: dict[str, dict[str, str]] = {}
    for name, module in quantized.items():
        aliases[name] = _save_fp8_component(module, dest / name)
        # Name the real class, so the index describes the pipeline; plain diffusers then fails
        # clearly on the missing diffusion_pytorch_model.safetensors instead of loading None.
        model_index[name] = [_library_of(module), type(module).__name__]
    (dest / "model_index.json").write_text(json.dumps(model_index, indent=2, sort_keys=True))

    marker = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "quantized_components": sorted(quantized),
        "weights": (
            "fp8_e4m3 (torchao Float8WeightOnlyConfig, one fp32 scale per output row; "
            "W8A8 is applied at load where the GPU has FP8 tensor cores)"
        ),
        "storage_dtype": "bf16",
        "source": source,
        "source_revision": loaded.weights_revision,
        "aliases": aliases,
        "library_versions": library_versions(),
    }
    (dest / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))


def load_fp8_checkpoint(
    folder: Path, marker: Fp8Marker, dtype: torch.dtype, pipeline_kwargs: dict[str, Any]
) -> StableDiffusion3Pipeline:
    """Loads an FP8 folder on the CPU: FP8 components from meta + their FP8 state, the rest 16-bit.

    ``dtype`` is the compute dtype (the 16-bit type of the device); ``pipeline_kwargs`` go to
    ``from_pretrained`` for the 16-bit part. A torchao folder stores bf16 and is read in bf16
    only: on a device without bf16 it raises ValueError saying to quantize at load instead.
    """
    if marker.backend == "torchao" and dtype != STORAGE_DTYPE:
        raise ValueError(
            f"{folder} stores its FP8 components for bf16 compute, and this device computes in "
            f"{dtype}; load the 16-bit source with precision fp8 (quantized at load) instead"
        )
    load = _load_torchao_component if marker.backend == "torchao" else _load_quanto_component
    components = {
        name: load(folder / name, marker.aliases.get(name, {}), dtype)
        for name in marker.quantized_components
    }
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, **components, **pipeline_kwargs)
    assert isinstance(pipe, StableDiffusion3Pipeline)
    return pipe


def _save_fp8_component(module: torch.nn.Module, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    config: Any = module.config
    if isinstance(module, ModelMixin):
        module.save_config(folder)  # a diffusers model: its config is a frozen dict
    else:
        config.save_pretrained(folder)  # a transformers model
    kept, aliases = split_tied(module.state_dict())
    tensors, metadata = fp8_torchao.flatten_state_dict(kept)
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", **metadata})
    return aliases


def split_tied(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict without keys sharing another's memory, and {dropped key: kept key}.

    safetensors refuses tensors sharing memory (T5 ties its input embedding to ``shared``):
    the first key of each is kept and the others are remembered as aliases.
    """
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key in sorted(state):
        tensor = state[key]
        if type(tensor) is not torch.Tensor:
            kept[key] = tensor  # a torchao FP8 weight: never tied
            continue
        identity = (
            tensor.untyped_storage().data_ptr(),
            int(tensor.storage_offset()),
            tuple(tensor.shape),
        )
        if identity in seen:
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        kept[key] = tensor.contiguous()
    return kept, aliases


def _component_class(folder: Path) -> Any:
    index = json.loads((folder.parent / "model_index.json").read_text())
    library, class_name = index[folder.name]
    if library not in _LIBRARIES:
        raise ValueError(f"{folder.name} names class {class_name} from {library!r}")
    return getattr(importlib.import_module(library), class_name)


def _load_torchao_component(
    folder: Path, aliases: dict[str, str], dtype: torch.dtype
) -> torch.nn.Module:
    path = folder / WEIGHTS_FILE
    cls = _component_class(folder)
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    metadata.pop("format", None)
    state = fp8_torchao.unflatten_state_dict(load_file(str(path)), metadata)
    for alias, key in aliases.items():
        state[alias] = state[key]
    module = _build_empty(cls, folder, set(state))
    # assign: the module's meta parameters become the file's tensors (FP8 ones included), so no
    # 16-bit copy of a weight is ever allocated.
    module.load_state_dict(state, strict=False, assign=True)
    _tie_and_check(module, state, path)
    return module


def _load_quanto_component(
    folder: Path, aliases: dict[str, str], dtype: torch.dtype
) -> torch.nn.Module:
    cls = _component_class(folder)
    state = load_file(str(folder / QUANTO_WEIGHTS_FILE))
    for alias, key in aliases.items():
        state[alias] = state[key]
    module = _build_empty(cls, folder, set(state))
    qmap = json.loads((folder / QMAP_FILE).read_text())
    fp8.requantize_fp8(module, state, qmap, compute_dtype=dtype)
    _tie_and_check(module, state, folder / QUANTO_WEIGHTS_FILE)
    return module


def _tie_and_check(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    tie_weights = getattr(module, "tie_weights", None)
    if callable(tie_weights):
        # Loading re-creates every parameter, which unties shared ones; tie them again.
        tie_weights()
    missing = sorted(set(module.state_dict()) - set(state))
    on_meta = sorted(name for name, param in module.named_parameters() if param.is_meta)
    if missing or on_meta:
        raise ValueError(f"{path} lacks {', '.join((missing or on_meta)[:5])}")
    module.eval()


def _build_empty(cls: Any, folder: Path, saved: set[str]) -> torch.nn.Module:
    """The module of ``folder``'s config with no weights in memory and no random init.

    First everything on the meta device, buffers included: a buffer computed in __init__ can
    cost more than the FP8 replica itself (SD3.5 Medium's 384x384 positional grid is built in
    float64, 3.5 GB for a moment; bench/fp8_memory.py measures it). Saved buffers are then
    filled from the file. A module with buffers the file lacks (computed, not saved) is built
    again with real buffers and meta parameters.
    """

    def construct() -> torch.nn.Module:
        if hasattr(cls, "load_config"):
            built: torch.nn.Module = cls.from_config(cls.load_config(folder))
        else:
            built = cls(cls.config_class.from_pretrained(folder))
        return built

    try:
        with torch.device("meta"):
            module = construct()
    except (RuntimeError, NotImplementedError):
        module = None  # an __init__ that needs real values (.item(), numpy); build as below
    if module is not None and all(name in saved for name, _ in module.named_buffers()):
        return module
    with init_empty_weights():
        return construct()


def _library_of(module: torch.nn.Module) -> str:
    return type(module).__module__.split(".")[0]
