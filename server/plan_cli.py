"""``pointillist plan``: the placement the server would make on an inventory, without starting it.

    pointillist plan --inventory nvml|cpu|FILE.toml [--config server.toml] [--reserve-gib GIB]
        [--footprint MODEL=GIB ...] [--min N] [--max N] [--replicas MODEL=MIN[:MAX] ...]
        [--under-load]

The plan is the running server's own decision: both build the placement problem with
``scheduler.placement_problem`` and solve it with ``scheduler.placement.place``. By default it
shows the server at start, with no work waiting: every model at its minimum. ``--under-load``
shows where growth leads when every model has waiting work: as many replicas as fit, up to each
model's maximum (the server adds them one at a time, each measured before the next).

Models come from the server configuration (``--config``, else ``POINTILLIST_CONFIG``, else the
demo model), and so do the reserve (``[scheduler] reserve_gib``, unless ``--reserve-gib``) and
the host's replica limit (``cpu_max_replicas``). Replica bounds, first found wins:
``--replicas MODEL=MIN[:MAX]`` for one model; ``--min`` / ``--max`` for every model; the model's
``min_replicas`` / ``max_replicas`` in the configuration; 1 and unlimited.
A model's ``device`` limits where it may go: ``auto`` any GPU (the CPU when the inventory has
none), ``cpu`` the host, ``cuda`` any GPU, ``cuda:N`` the N-th GPU of the inventory.

Each device's capacity is its free memory minus the reserve. Prints one line per device and
exits 0, or 1 when some model's minimum cannot be met (2 for bad arguments).

Footprints (bytes one replica holds on a GPU) default to an ESTIMATE
(``scheduler.placement_estimate``) unless ``--footprint MODEL=GIB`` gives one; the running server
places its first replica of a model with the same estimate, then measures the real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.config import ModelConfig
from scheduler.inventory import DeviceInventory, DeviceSnapshot
from scheduler.nvml_inventory import InventoryError
from scheduler.placement import ModelDemand, Placement, describe_plan, place
from scheduler.placement_estimate import FootprintEstimate, estimate_footprint
from scheduler.placement_problem import (
    ModelSituation,
    eligible_devices,
    placement_problem,
    replicas_wanted,
)
from scheduler.simulated_inventory import load_inventory
from server.settings import ConfigError, load_settings

# Re-exported: the estimate and the device rule lived here before the fleet shared them.
__all__ = ["FootprintEstimate", "eligible_devices", "estimate_footprint", "register_plan"]

GIB = 1 << 30


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
        default=None,
        metavar="GIB",
        help="memory left free on every device (default: the config's reserve_gib, else 1.0)",
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
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="every model has waiting work: as many replicas as fit, up to each maximum "
        "(default: the server at start, every model at its minimum)",
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
    fleet = settings.scheduler
    reserve = fleet.reserve_bytes if args.reserve_gib is None else round(args.reserve_gib * GIB)
    bounded: list[ModelConfig] = []
    footprints: dict[str, int] = {}
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
        bounded.append(dataclasses.replace(model, min_replicas=low, max_replicas=high))
        footprints[model.id] = footprint
    demands, placement = plan_placement(
        devices,
        bounded,
        footprints,
        reserve_bytes=reserve,
        cpu_max_replicas=fleet.cpu_max_replicas,
        under_load=args.under_load,
    )
    print(render_plan(args.inventory, devices, demands, reasons, placement, reserve))
    when = (
        "under load: every model with waiting work"
        if args.under_load
        else "at start: no work waiting (--under-load: every model with waiting work)"
    )
    print(f"placement {when}")
    return 1 if placement.unmet_minimums else 0


def plan_placement(
    devices: Sequence[DeviceSnapshot],
    models: Sequence[ModelConfig],
    footprints: Mapping[str, int],
    *,
    reserve_bytes: int,
    cpu_max_replicas: int,
    under_load: bool = False,
) -> tuple[list[ModelDemand], Placement]:
    """The plan: the problem the server builds (``scheduler.placement_problem``) for these
    devices with nothing of ours on them, solved by the server's ``place()``."""
    situations = [
        ModelSituation(model, footprints[model.id], plan_wanted(model, under_load))
        for model in models
    ]
    capacities, demands = placement_problem(
        devices, situations, reserve_bytes=reserve_bytes, cpu_max_replicas=cpu_max_replicas
    )
    return demands, place(capacities, demands)


def plan_wanted(model: ModelConfig, under_load: bool) -> int | None:
    """How many replicas the plan asks ``place()`` for: at start, what the server wants with
    nothing running and nothing waiting; under load, up to the model's maximum."""
    if under_load:
        return model.max_replicas
    return replicas_wanted(model, running=0, waiting=False, starting=False, idle=False)


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
