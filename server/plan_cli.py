"""``pointillist plan``: the placement the server would make on an inventory, without starting it.

    pointillist plan --inventory nvml|cpu|FILE.toml [--config server.toml] [--reserve-gib 1.0]
        [--footprint MODEL=GIB ...] [--min N] [--max N] [--replicas MODEL=MIN[:MAX] ...]

Models come from the server configuration (``--config``, else ``POINTILLIST_CONFIG``, else the
demo model). Replica bounds, first found wins: ``--replicas MODEL=MIN[:MAX]`` for one model;
``--min`` / ``--max`` for every model; the model's ``min_replicas`` / ``max_replicas`` in the
configuration (where the configuration has them); 1 and unlimited.
A model's ``device`` limits where it may go: ``auto`` any GPU (the CPU when the inventory has
none), ``cpu`` the host, ``cuda`` any GPU, ``cuda:N`` the N-th GPU of the inventory.

Each device's capacity is its free memory minus ``--reserve-gib``. Prints one line per device
and exits 0, or 1 when some model's minimum cannot be met (2 for bad arguments).

Footprints (bytes one replica holds on a GPU) default to an ESTIMATE unless
``--footprint MODEL=GIB`` gives one; the running server measures the real one. The estimate adds
weight bytes from the SD3.5 parameter counts (transformer: Large 8.06B, Medium 2.24B; T5-XXL
4.76B of which 0.13B embedding; CLIP-G 0.69B; CLIP-L 0.12B; VAE 0.08B) at the precision policy
(FP8: the transformer and T5's linear layers at 1 byte per parameter, everything else 16-bit,
plus the transformer's 16-bit positional-embedding buffer: 0.45 GB Medium, 0.18 GB Large), then
``RUNTIME_GIB`` for the CUDA context and the activations of a 1024x1024 image with CFG (the VAE
decode dominates). That gives about 11.7 GiB for SD3.5 Medium in FP8 and 16.9 GiB for Large
(18.1 / 28.7 GiB in bf16). The size is read from the model's source: "large" or "medium" in it
(case-insensitive); otherwise Large is assumed. The ``demo`` model is counted as ``DEMO_GIB``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import DEMO_SOURCE, ModelConfig, PrecisionPolicy
from scheduler.fleet import device_allowed
from scheduler.inventory import DeviceInventory, DeviceSnapshot
from scheduler.nvml_inventory import InventoryError
from scheduler.placement import (
    ModelDemand,
    Placement,
    describe_plan,
    device_capacities,
    place,
)
from scheduler.simulated_inventory import load_inventory
from server.settings import ConfigError, load_settings

GIB = 1 << 30
GB = 10**9
RUNTIME_GIB = 3.0
"""CUDA context (~0.5 GiB) + activations at 1024x1024 with CFG (~2.5 GiB, VAE decode): estimated."""
DEMO_GIB = 1.0
"""The demo model's tiny pipeline: what a worker process holds is mostly the runtime itself."""

TRANSFORMER_PARAMS = {"large": 8.06e9, "medium": 2.24e9}
TRANSFORMER_BUFFER_BYTES = {"large": 0.18e9, "medium": 0.45e9}
T5_LINEAR_PARAMS = 4.63e9
SIXTEEN_BIT_PARAMS = 0.13e9 + 0.69e9 + 0.12e9 + 0.08e9  # T5 embedding, CLIP-G, CLIP-L, VAE


@dataclass(frozen=True)
class FootprintEstimate:
    bytes: int
    reason: str


def estimate_footprint(model: ModelConfig) -> FootprintEstimate:
    """What one replica of ``model`` holds on a GPU, estimated (see the module docstring)."""
    if model.source == DEMO_SOURCE:
        return FootprintEstimate(round(DEMO_GIB * GIB), "estimate: demo model")
    lowered = model.source.lower()
    size = "large" if "large" in lowered else "medium" if "medium" in lowered else None
    assumed = size is None
    size = size or "large"
    precision = model.precision
    fp8 = precision in (PrecisionPolicy.FP8, PrecisionPolicy.AUTO)
    quantizable = TRANSFORMER_PARAMS[size] + T5_LINEAR_PARAMS
    if fp8:
        weights = quantizable + 2 * SIXTEEN_BIT_PARAMS
    else:
        per_param = 4 if precision == PrecisionPolicy.FP32 else 2
        weights = per_param * (quantizable + SIXTEEN_BIT_PARAMS)
    weights += TRANSFORMER_BUFFER_BYTES[size]
    total = round(weights + RUNTIME_GIB * GIB)
    label = "FP8" if fp8 else str(precision.value)
    reason = f"estimate: SD3.5 {size.capitalize()}, {label}"
    if assumed:
        reason += " (size not in the source's name: Large assumed)"
    return FootprintEstimate(total, reason)


def register_plan(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="print the placement the server would make on an inventory, starting nothing",
        description=(
            "Print how many replicas of each model would be placed on each device: measured "
            "free memory (NVML, the host, or a simulated-inventory file) and each model's "
            "footprint (estimated unless --footprint gives it)."
        ),
    )
    parser.add_argument(
        "--inventory",
        required=True,
        metavar="nvml|cpu|FILE",
        help="'nvml' (the GPUs), 'cpu' (the host) or a simulated-inventory TOML file",
    )
    parser.add_argument("--config", type=Path, help="server TOML config (env POINTILLIST_CONFIG)")
    parser.add_argument(
        "--reserve-gib",
        type=_non_negative_float,
        default=1.0,
        metavar="GIB",
        help="memory left free on every device (default 1.0)",
    )
    parser.add_argument(
        "--footprint",
        type=_model_gib,
        action="append",
        default=[],
        metavar="MODEL=GIB",
        help="bytes one replica of MODEL holds, in GiB (default: an estimate); repeatable",
    )
    parser.add_argument(
        "--min",
        dest="min_replicas",
        type=_count,
        default=None,
        help="replicas each model needs (default: the model's min_replicas, else 1)",
    )
    parser.add_argument(
        "--max",
        dest="max_replicas",
        type=_count,
        default=None,
        help="most replicas of each model (default: the model's max_replicas, else as many as fit)",
    )
    parser.add_argument(
        "--replicas",
        type=_model_bounds,
        action="append",
        default=[],
        metavar="MODEL=MIN[:MAX]",
        help="replica bounds of one model, overriding --min/--max; repeatable",
    )
    parser.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pointillist plan: configuration error: {exc}", file=sys.stderr)
        return 2
    models = settings.models
    known = {model.id for model in models}
    footprints_gib = dict(args.footprint)
    bounds = dict(args.replicas)
    for name, given in (("--footprint", footprints_gib), ("--replicas", bounds)):
        unknown = sorted(set(given) - known)
        if unknown:
            print(
                f"pointillist plan: {name}: unknown model {', '.join(unknown)}; "
                f"configured: {', '.join(sorted(known))}",
                file=sys.stderr,
            )
            return 2
    try:
        inventory = load_inventory(args.inventory)
    except InventoryError as exc:
        print(f"pointillist plan: {exc}", file=sys.stderr)
        return 1
    try:
        devices = inventory.snapshot()
    except InventoryError as exc:
        print(f"pointillist plan: {exc}", file=sys.stderr)
        return 1
    finally:
        _close(inventory)
    reserve = round(args.reserve_gib * GIB)
    demands: list[ModelDemand] = []
    reasons: dict[str, str] = {}
    for model in models:
        if model.id in footprints_gib:
            footprint = round(footprints_gib[model.id] * GIB)
            reasons[model.id] = "given"
        else:
            estimate = estimate_footprint(model)
            footprint, reasons[model.id] = estimate.bytes, estimate.reason
        low, high = bounds.get(model.id, replica_bounds(model, args))
        if high is not None and high < low:
            print(f"pointillist plan: {model.id}: max {high} is below min {low}", file=sys.stderr)
            return 2
        demands.append(
            ModelDemand(model.id, footprint, low, high, eligible_devices(model.device, devices))
        )
    placement = place(device_capacities(devices, reserve), demands)
    print(render_plan(args.inventory, devices, demands, reasons, placement, reserve))
    return 1 if placement.unmet_minimums else 0


def render_plan(
    inventory: str,
    devices: Sequence[DeviceSnapshot],
    demands: Sequence[ModelDemand],
    reasons: Mapping[str, str],
    placement: Placement,
    reserve_bytes: int,
) -> str:
    lines = [
        f"inventory: {inventory} ({len(devices)} device{'s' if len(devices) != 1 else ''}), "
        f"reserve {reserve_bytes / GIB:.1f} GiB per device",
        "models:",
    ]
    for demand in demands:
        high = "unlimited" if demand.max_replicas is None else str(demand.max_replicas)
        where = "any device" if demand.allowed_devices is None else _ids(demand.allowed_devices)
        lines.append(
            f"  {demand.model_id}: {demand.footprint_bytes / GIB:.1f} GiB per replica "
            f"({reasons[demand.model_id]}), replicas {demand.min_replicas}..{high}, on {where}"
        )
    lines.append("")
    footprints = {demand.model_id: demand.footprint_bytes for demand in demands}
    lines.append(describe_plan(devices, placement, footprints, reserve_bytes))
    search = "exact search" if placement.exact else "greedy: too large for the exact search"
    lines.append(f"{placement.total} replicas ({search})")
    return "\n".join(lines)


def replica_bounds(model: ModelConfig, args: argparse.Namespace) -> tuple[int, int | None]:
    """--min / --max where given, else the model's configuration, else 1 and unlimited."""
    low = args.min_replicas
    if low is None:
        low = getattr(model, "min_replicas", 1)
    high = args.max_replicas
    if high is None:
        high = getattr(model, "max_replicas", None)
    return int(low), None if high is None else int(high)


def eligible_devices(device: str, devices: Sequence[DeviceSnapshot]) -> frozenset[str] | None:
    """The devices a model configured with ``device`` may use: the scheduler's rule
    (``scheduler.fleet.device_allowed``), where ``auto`` prefers the GPUs when there are any."""
    allowed = [snapshot for snapshot in devices if device_allowed(device, snapshot)]
    if device == "auto" and any(snapshot.kind == "cuda" for snapshot in allowed):
        allowed = [snapshot for snapshot in allowed if snapshot.kind == "cuda"]
    return frozenset(snapshot.id for snapshot in allowed)


def _ids(ids: frozenset[str]) -> str:
    return ", ".join(sorted(ids)) if ids else "no device of this inventory"


def _close(inventory: DeviceInventory) -> None:
    close = getattr(inventory, "close", None)
    if callable(close):
        close()


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _model_gib(text: str) -> tuple[str, float]:
    model, sep, value = text.partition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"expected MODEL=GIB, got {text!r}")
    gib = _non_negative_float(value)
    if gib == 0:
        raise argparse.ArgumentTypeError("a footprint must be > 0 GiB")
    return model, gib


def _model_bounds(text: str) -> tuple[str, tuple[int, int | None]]:
    model, sep, value = text.partition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"expected MODEL=MIN[:MAX], got {text!r}")
    low, colon, high = value.partition(":")
    return model, (_count(low), _count(high) if colon and high else None)
