"""The placement problem from an inventory, the model configs, footprints and limits.

``pointillist plan`` and the running fleet both build what ``scheduler.placement.place`` solves
here, so that the plan shows what the server does. What the fleet knows and the plan cannot (the
replicas running now, waiting work, out-of-memory caps) comes in as explicit inputs; the plan
passes the server's state at start: nothing running, nothing waiting.

The rules this adds to ``place()``'s:

- How many replicas a model wants now (``replicas_wanted``): its ``min_replicas`` at start; one
  more than it runs while work waits and none of its replicas is starting (growth one replica at
  a time, each measured before the next); back to its minimum once idle; otherwise what it runs.
  Never above its ``max_replicas``. This is ``place()``'s maximum for the model.
- Where it may go (``eligible_devices``): its ``device`` setting (``device_allowed``), where
  ``auto`` prefers the GPUs when there are any.
- Per device at most: the out-of-memory cap on that device (``scheduler.oom_limits``), and on the
  host (a ``cpu`` device) ``cpu_max_replicas``, since replicas there share its cores.
- Capacity per device: free memory + what our replicas hold there - the reserve
  (``placement.device_capacities``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.config import ModelConfig
from scheduler.inventory import DeviceSnapshot
from scheduler.placement import DeviceCapacity, ModelDemand, device_capacities


@dataclass(frozen=True)
class ModelSituation:
    """One model as the planner sees it: its config, the bytes one replica needs, how many
    replicas it wants now (``replicas_wanted``; None: as many as fit up to its maximum) and its
    out-of-memory caps per device id."""

    config: ModelConfig
    footprint_bytes: int
    wanted: int | None
    oom_caps: Mapping[str, int] = field(default_factory=dict)


def replicas_wanted(
    config: ModelConfig, *, running: int, waiting: bool, starting: bool, idle: bool
) -> int:
    """How many replicas the model wants now (see the module docstring). ``running``: its
    replicas not draining; ``waiting``: jobs in its queue; ``starting``: one of them is still
    loading; ``idle``: nothing queued or running for the idle scale-down delay."""
    if waiting and not starting:
        wanted = running + 1
    elif idle:
        wanted = config.min_replicas
    else:
        wanted = running
    wanted = max(wanted, config.min_replicas)
    return wanted if config.max_replicas is None else min(wanted, config.max_replicas)


def placement_problem(
    devices: Sequence[DeviceSnapshot],
    models: Sequence[ModelSituation],
    *,
    reserve_bytes: int,
    cpu_max_replicas: int,
    ours_bytes: Mapping[str, int] | None = None,
) -> tuple[list[DeviceCapacity], list[ModelDemand]]:
    """The devices and demands to pass to ``place()``. ``ours_bytes``: per device id, the
    memory our replicas hold there now (none for a plan)."""
    capacities = device_capacities(devices, reserve_bytes, ours_bytes)
    demands = []
    for model in models:
        limits = dict(model.oom_caps)
        for device in devices:
            if device.kind == "cpu":
                limits[device.id] = min(limits.get(device.id, cpu_max_replicas), cpu_max_replicas)
        low = model.config.min_replicas
        high = model.wanted if model.wanted is not None else model.config.max_replicas
        demands.append(
            ModelDemand(
                model.config.id,
                max(1, model.footprint_bytes),
                min(low, high) if high is not None else low,
                high,
                eligible_devices(model.config.device, devices),
                limits,
            )
        )
    return capacities, demands


def eligible_devices(device: str, devices: Sequence[DeviceSnapshot]) -> frozenset[str]:
    """The devices a model configured with ``device`` may use (``device_allowed``), where
    ``auto`` prefers the GPUs when there are any."""
    allowed = [snapshot for snapshot in devices if device_allowed(device, snapshot)]
    if device == "auto" and any(snapshot.kind == "cuda" for snapshot in allowed):
        allowed = [snapshot for snapshot in allowed if snapshot.kind == "cuda"]
    return frozenset(snapshot.id for snapshot in allowed)


def device_allowed(setting: str, device: DeviceSnapshot) -> bool:
    """Whether a model whose ``device`` setting is ``setting`` may run on ``device``: ``auto``
    anywhere, ``cuda`` on any GPU, ``cuda:N`` on GPU N only, ``cpu`` on the host."""
    if setting == "auto":
        return True
    kind, _, index = setting.partition(":")
    return kind == device.kind and (not index or device.engine_device == setting)
