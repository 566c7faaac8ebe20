"""Where a model's weights come from: the demo, a local diffusers folder, or the hub.

``locate_source`` decides what a configured ``source`` is and checks it exists (cheap, no weights
read); ``load_pipeline`` builds the pipeline on the CPU in the dtype the precision plan asks for,
so a 16-bit checkpoint is never widened to float32 on the way in.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from diffusers.utils import deprecation_utils

from engine import fp8_checkpoint
from engine.config import DEMO_SOURCE
from engine.demo import build_demo_pipeline, demo_weights_revision
from engine.provenance import folder_fingerprint, hub_snapshot_commit

# "name" or "owner/name", as the hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "on", "yes", "true"}
# diffusers renamed ``torch_dtype`` to ``dtype`` and warns on the old name; older releases know
# only the old one. The helper that resolves the two appeared with the rename.
_DTYPE_ARGUMENT = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what was tried and what to do instead."""


@dataclass(frozen=True)
class ModelSource:
    """A located model source."""

    kind: str  # "demo", "folder" or "hub"
    # The folder to load (for "hub", the downloaded or cached snapshot); None for the demo.
    folder: Path | None
    # What the user configured, for messages and provenance.
    name: str
    # Components stored in FP8 by ``pointillist quantize`` (empty for ordinary folders).
    fp8_components: tuple[str, ...] = ()
    # The FP8 library that folder was written with: "torchao", "quanto" (old folders) or "".
    fp8_backend: str = ""


@dataclass(frozen=True)
class LoadedPipeline:
    """A pipeline on the CPU and the revision of the weights it holds."""

    pipe: StableDiffusion3Pipeline
    weights_revision: str


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when CUDA is available, else the CPU; ``cuda:N`` is honoured."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {name!r} asked for, but CUDA is not available here")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
        device = torch.device("cuda", index)
    return device


def locate_source(source: str, revision: str | None = None) -> ModelSource:
    """Resolves ``source`` to the demo, an existing local folder, or a hub snapshot.

    A hub id is downloaded (or found in the hub cache) here; without a network, or with
    ``HF_HUB_OFFLINE=1`` and nothing cached, this raises ModelLoadError.
    """
    if source == DEMO_SOURCE:
        return ModelSource(kind="demo", folder=None, name=source)
    path = Path(source).expanduser()
    if path.exists():
        return _local_folder(path, source)
    if _looks_like_path(source) or not _HUB_ID.match(source):
        raise ModelLoadError(
            f"model folder {str(path)!r} does not exist; source must be 'demo', an existing "
            "diffusers folder, or a hub id such as stabilityai/stable-diffusion-3.5-medium"
        )
    snapshot = _hub_snapshot(source, revision)
    located = _local_folder(snapshot, source)
    return dataclasses.replace(located, kind="hub", name=source)


def load_pipeline(source: ModelSource, dtype: torch.dtype) -> LoadedPipeline:
    """Builds the pipeline on the CPU with its floating-point weights in ``dtype``.

    Checkpoints are read straight into ``dtype`` (never widened to float32 on the way in);
    transformers keeps the layers a model needs in float32 (T5's ``wo`` in fp16) as usual.
    """
    if source.kind == "demo":
        pipe = build_demo_pipeline()
        # The demo's weights are defined, and hashed, in float32.
        revision = demo_weights_revision(pipe)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                # nn.Module.to, not the diffusers override: that one warns about float32-only
                # modules even when a model has none.
                torch.nn.Module.to(component, dtype=dtype)
        return LoadedPipeline(pipe=pipe, weights_revision=revision)
    assert source.folder is not None
    kwargs: dict[str, Any] = {_DTYPE_ARGUMENT: dtype}
    try:
        marker = fp8_checkpoint.read_marker(source.folder)
        if marker is not None:
            pipe = fp8_checkpoint.load_fp8_checkpoint(source.folder, marker, dtype, kwargs)
        else:
            loaded = StableDiffusion3Pipeline.from_pretrained(source.folder, **kwargs)
            if not isinstance(loaded, StableDiffusion3Pipeline):
                raise ModelLoadError(
                    f"{source.name} holds a {type(loaded).__name__}, not a Stable Diffusion 3 "
                    "pipeline"
                )
            pipe = loaded
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"could not load the SD3 pipeline from {source.name}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    commit = hub_snapshot_commit(source.folder) if source.kind == "hub" else None
    revision = commit or folder_fingerprint(source.folder)
    return LoadedPipeline(pipe=pipe, weights_revision=revision)


def _local_folder(path: Path, name: str) -> ModelSource:
    if not path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a file; source must be a diffusers folder")
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(
            f"{str(path)!r} is not a diffusers folder (no model_index.json); point source at "
            "what save_pretrained, a hub snapshot or `pointillist quantize` wrote"
        )
    try:
        marker = fp8_checkpoint.read_marker(path)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    if marker is None:
        return ModelSource(kind="folder", folder=path, name=name)
    return ModelSource(
        kind="folder",
        folder=path,
        name=name,
        fp8_components=marker.quantized_components,
        fp8_backend=marker.backend,
    )


def _looks_like_path(source: str) -> bool:
    # A hub id has at most one "/" and never starts like a path.
    return source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1


def _hub_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it again so setting it later
    # (a test, a worker's environment) still means "do not touch the network".
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    offline = _hub_offline()
    try:
        # The pipeline's own download: it fetches only the files the pipeline loads (a hub repo
        # also holds single-file checkpoints as large as the whole model).
        folder = StableDiffusion3Pipeline.download(
            repo_id, revision=revision, local_files_only=offline
        )
    except Exception as exc:  # the hub raises many kinds (HTTP, offline, not found, gated)
        why = "HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline else str(exc)
        at = f" at revision {revision}" if revision else ""
        raise ModelLoadError(
            f"no local folder {repo_id!r} exists and the hub id could not be fetched{at} from "
            f"the Hugging Face hub: {why}. Without a network, download the model elsewhere "
            "(e.g. `hf download`) and set source to that local diffusers folder"
        ) from exc
    return Path(folder)
