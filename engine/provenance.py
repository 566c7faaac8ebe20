"""What produced a result: the weights' revision, the libraries and the device.

A result should be reproducible from its provenance: same weights revision, same library
versions, same device kind, same spec gives the same image bytes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from engine.job import DeviceInfo

_MIB = 1024 * 1024
# A hub cache snapshot folder is named after the commit it holds.
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def device_info(device: torch.device) -> DeviceInfo:
    """The device as the scheduler and clients see it: a GPU by its UUID (as NVML names it)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        uuid = str(getattr(props, "uuid", "") or f"index-{index}")
        # NVML writes "GPU-<uuid>"; torch gives the bare uuid.
        gpu_id = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        return DeviceInfo(kind="cuda", id=gpu_id, name=props.name)
    features: dict[str, Any] = getattr(torch.cpu, "get_capabilities", dict)()
    return DeviceInfo(kind="cpu", id="cpu", name=str(features.get("cpu_name") or "CPU"))


def hub_snapshot_commit(folder: Path) -> str | None:
    """The commit a hub cache snapshot folder holds (``.../snapshots/<commit>``), else None."""
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and _COMMIT.match(resolved.name):
        return resolved.name
    return None


def folder_fingerprint(folder: Path) -> str:
    """A cheap revision for a local folder: ``sha256-`` and 16 hex digits.

    Hashes every file's relative path and size, the whole of small files (configs, tokenizer
    files) and the first and last MiB of large ones (weights), so it reads a few MiB per
    weight file instead of gigabytes, yet changes when any file is replaced or edited in place
    at either end. Hidden paths (``.cache``, ``.git``) are skipped: they change without the
    weights changing.
    """
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with path.open("rb") as handle:
            if size <= 2 * _MIB:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_MIB))
                handle.seek(size - _MIB)
                digest.update(handle.read(_MIB))
    return f"sha256-{digest.hexdigest()[:16]}"
