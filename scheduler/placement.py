"""Where replicas go: how many replicas of each model on each device, from measured capacity.

Pure functions, no I/O. The caller measures (``scheduler.inventory``) and passes, per device, the
bytes our replicas may use there (``device_capacities``: free memory + what our replicas already
hold - the operator's reserve) and, per model, the bytes one replica needs.

Rules, in priority order (the placement maximises this key, lexicographically):

1. Minimums first: as many replicas as possible up to each model's ``min_replicas``; when not all
   fit, the shortfall is shared (the worst-off model is made as well off as possible).
2. No model above its minimum while another is below its own: while any model misses its
   minimum, every model stays at (or below) its minimum. A model that fits on no allowed device
   at all (its footprint exceeds every capacity) cannot be helped by that restraint and does not
   hold the others back; it is still reported in ``Placement.unmet_minimums``.
3. Then as many replicas in total as fit (never more than ``max_replicas``). Note what this
   means: with unlimited maximums the extra replicas go to the model with the smallest footprint,
   because that places the most; set ``max_replicas`` to share a GPU between models on purpose.
4. Fair round-robin between models as the tie-break: among the count vectors with that total, the
   one whose replicas above the minimums are most even (leximin), then more to earlier models.
5. For those counts: move as few running replicas as possible (when ``current`` is given), then
   spread each model across devices before doubling up on one (fewest same-model pairs on a
   device), then balance the devices (least sum over devices of used^2 / capacity, in MiB: each
   fills in proportion to its capacity, so the headroom left is spread too), then earlier
   devices first.

Never over-commit: the footprints placed on a device sum to at most its capacity, and no model
has more replicas on a device than its ``device_limits`` allow there.

How: an exact dynamic programme over devices whose state is the vector of replica counts per
model (each device contributes one of its feasible "configurations", a replica count per model
that fits). It is exact for the whole key above. Its work is the number of reachable count
vectors times the configurations per device; it handles real inventories (8 GPUs of 80 GiB with
two SD3.5 models) in well under a second. When the work would exceed ``exact_limit``, a greedy
takes over (``Placement.exact`` is then False): minimums round-robin (largest footprint first),
then the smallest model that still fits, then swaps that even out the replicas above the minimums.
The greedy never over-commits and respects every maximum, but may miss the optimum total or a
minimum that a cleverer packing would meet. ``tests/scheduler/test_placement.py`` compares the
exact search with a brute force on hundreds of random small cases.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.inventory import DeviceSnapshot

GIB = 1 << 30
DEFAULT_EXACT_LIMIT = 1_000_000
"""Most (reachable count vectors x device configurations) the exact search visits (about 0.3 s
of CPython at the limit); past it the greedy runs."""

ReplicaKey = tuple[str, str]
"""(device_id, model_id)."""


@dataclass(frozen=True)
class DeviceCapacity:
    """Bytes our replicas may use on one device (free + ours already there - the reserve)."""

    device_id: str
    capacity_bytes: int


@dataclass(frozen=True)
class ModelDemand:
    """One model: the bytes one replica needs, and how many replicas it wants.

    ``max_replicas`` None means as many as fit. ``allowed_devices`` None means any device;
    otherwise the ids of the devices this model may run on (a model configured for the CPU only).
    ``device_limits``: at most that many replicas on the devices it names (an out-of-memory cap,
    the host's core share), whatever the memory would allow.
    """

    model_id: str
    footprint_bytes: int
    min_replicas: int = 1
    max_replicas: int | None = None
    allowed_devices: frozenset[str] | None = None
    device_limits: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """Replica counts per (device_id, model_id) (only counts > 0 are kept).

    ``unmet_minimums``: the models placed below their ``min_replicas``, in model order.
    ``exact``: found by the exact search (False: by the greedy, on a large instance).
    """

    replicas: Mapping[ReplicaKey, int] = field(default_factory=dict)
    unmet_minimums: tuple[str, ...] = ()
    exact: bool = True

    def count(self, device_id: str, model_id: str) -> int:
        return self.replicas.get((device_id, model_id), 0)

    @property
    def total(self) -> int:
        return sum(self.replicas.values())

    def per_model(self) -> dict[str, int]:
        """Replicas of each placed model, over all devices."""
        totals: dict[str, int] = {}
        for (_, model_id), count in self.replicas.items():
            totals[model_id] = totals.get(model_id, 0) + count
        return totals

    def on_device(self, device_id: str) -> dict[str, int]:
        """Replicas per model on one device."""
        return {
            model_id: count
            for (device, model_id), count in self.replicas.items()
            if device == device_id
        }

    def used_bytes(self, device_id: str, footprints: Mapping[str, int]) -> int:
        """Bytes the replicas placed on the device need, by the given footprints."""
        return sum(
            count * footprints[model_id] for model_id, count in self.on_device(device_id).items()
        )


@dataclass(frozen=True)
class ReplicaChange:
    """Start (``delta`` > 0) or drain (``delta`` < 0) replicas of a model on a device."""

    device_id: str
    model_id: str
    delta: int


@dataclass(frozen=True)
class PlacementDiff:
    """What turns the current placement into the target.

    ``drains`` come first in the order they should be applied: replicas of models furthest above
    their minimum first, models at or below their minimum last. ``adds`` start models furthest
    below their minimum first. Draining first frees the memory the adds may need.
    """

    drains: tuple[ReplicaChange, ...] = ()
    adds: tuple[ReplicaChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.drains and not self.adds


# ---------------------------------------------------------------------------------------------
# Capacities


def device_capacities(
    devices: Sequence[DeviceSnapshot],
    reserve_bytes: int = 0,
    ours_bytes: Mapping[str, int] | None = None,
) -> list[DeviceCapacity]:
    """Per device: free + ``ours_bytes[id]`` (what our replicas hold there now) - the reserve.

    Never negative.
    """
    ours_bytes = ours_bytes or {}
    return [
        DeviceCapacity(
            device.id,
            max(0, device.free_bytes + ours_bytes.get(device.id, 0) - reserve_bytes),
        )
        for device in devices
    ]


# ---------------------------------------------------------------------------------------------
# Placement


def place(
    devices: Sequence[DeviceCapacity],
    models: Sequence[ModelDemand],
    current: Mapping[ReplicaKey, int] | None = None,
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
) -> Placement:
    """The placement that maximises the key in this module's docstring.

    ``current`` (replicas running now, per (device_id, model_id)) only breaks ties: among the best
    placements, the one that starts and drains the fewest replicas. Raises ValueError on
    duplicate ids, a footprint <= 0, a negative minimum or a maximum below the minimum.
    """
    _validate(devices, models)
    problem = _Problem(devices, models, current or {})
    if not models or not devices:
        return problem.placement([[0] * len(models) for _ in devices], exact=True)
    counts = _exact(problem, exact_limit)
    if counts is not None:
        return problem.placement(counts, exact=True)
    return problem.placement(_greedy(problem), exact=False)


def diff_placement(
    current: Mapping[ReplicaKey, int],
    target: Placement | Mapping[ReplicaKey, int],
    models: Sequence[ModelDemand],
) -> PlacementDiff:
    """The replicas to drain and to start to go from ``current`` to ``target``.

    Drains are ordered so that replicas of models above their minimum go first (the most surplus
    first), which keeps every model at its minimum as long as possible while the plan is applied;
    adds put the models furthest below their minimum first.
    """
    wanted = target.replicas if isinstance(target, Placement) else target
    minimum = {model.model_id: model.min_replicas for model in models}
    now: dict[str, int] = {}
    for (_, model_id), count in current.items():
        now[model_id] = now.get(model_id, 0) + count
    keys = sorted(set(current) | set(wanted))
    changes = [
        ReplicaChange(device_id, model_id, wanted.get(key, 0) - current.get(key, 0))
        for key in keys
        for device_id, model_id in (key,)
        if wanted.get(key, 0) != current.get(key, 0)
    ]
    drains = sorted(
        (change for change in changes if change.delta < 0),
        key=lambda change: (
            -(now.get(change.model_id, 0) - minimum.get(change.model_id, 0)),
            change.model_id,
            change.device_id,
        ),
    )
    adds = sorted(
        (change for change in changes if change.delta > 0),
        key=lambda change: (
            now.get(change.model_id, 0) - minimum.get(change.model_id, 0),
            change.model_id,
            change.device_id,
        ),
    )
    return PlacementDiff(tuple(drains), tuple(adds))


def describe_plan(
    devices: Sequence[DeviceSnapshot],
    placement: Placement,
    footprints: Mapping[str, int],
    reserve_bytes: int = 0,
    ours_bytes: Mapping[str, int] | None = None,
) -> str:
    """A text table, one line per device: memory, replicas per model, headroom after placement.

    ``headroom`` = free + ours - reserve - the footprints placed: what is left for one more
    replica. ``footprints`` maps model ids to bytes (its order is the columns' order).
    """
    ours_bytes = ours_bytes or {}
    models = list(footprints)
    header = ["device", "name", "total GiB", "free GiB", *models, "placed GiB", "headroom GiB"]
    rows = [header]
    for device in devices:
        placed = placement.used_bytes(device.id, footprints)
        capacity = device.free_bytes + ours_bytes.get(device.id, 0) - reserve_bytes
        rows.append(
            [
                device.id,
                device.name,
                _gib(device.total_bytes),
                _gib(device.free_bytes),
                *(str(placement.count(device.id, model)) for model in models),
                _gib(placed),
                _gib(capacity - placed),
            ]
        )
    totals = placement.per_model()
    rows.append(["total", "", "", "", *(str(totals.get(model, 0)) for model in models), "", ""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.insert(len(lines) - 1, lines[1])
    text = [line.rstrip() for line in lines]
    if placement.unmet_minimums:
        text.append(f"minimum not met: {', '.join(placement.unmet_minimums)}")
    return "\n".join(text)


def _gib(value: int) -> str:
    return f"{value / GIB:.1f}"


# ---------------------------------------------------------------------------------------------
# The problem, shared by the exact search and the greedy


def _validate(devices: Sequence[DeviceCapacity], models: Sequence[ModelDemand]) -> None:
    device_ids = [device.device_id for device in devices]
    if len(set(device_ids)) != len(device_ids):
        raise ValueError(f"device ids must be unique, got {device_ids}")
    model_ids = [model.model_id for model in models]
    if len(set(model_ids)) != len(model_ids):
        raise ValueError(f"model ids must be unique, got {model_ids}")
    for model in models:
        if model.footprint_bytes <= 0:
            raise ValueError(f"model {model.model_id!r}: footprint must be > 0 bytes")
        if model.min_replicas < 0:
            raise ValueError(f"model {model.model_id!r}: min_replicas must be >= 0")
        if model.max_replicas is not None and model.max_replicas < model.min_replicas:
            raise ValueError(f"model {model.model_id!r}: max_replicas is below min_replicas")


class _Problem:
    """Indices instead of ids; per model its reachable maximum; the objective key."""

    def __init__(
        self,
        devices: Sequence[DeviceCapacity],
        models: Sequence[ModelDemand],
        current: Mapping[ReplicaKey, int],
    ) -> None:
        self.devices = list(devices)
        self.models = list(models)
        self.capacity = [max(0, device.capacity_bytes) for device in devices]
        self.footprint = [model.footprint_bytes for model in models]
        self.minimum = [model.min_replicas for model in models]
        self.allowed = [
            [
                model.allowed_devices is None or device.device_id in model.allowed_devices
                for model in models
            ]
            for device in devices
        ]
        # The most replicas of each model each device may hold, by memory and by its limits.
        self.room = [
            [
                min(
                    self.capacity[d] // self.footprint[m],
                    max(0, model.device_limits.get(device.device_id, 1 << 62)),
                )
                if self.allowed[d][m]
                else 0
                for m, model in enumerate(models)
            ]
            for d, device in enumerate(devices)
        ]
        self.current = [
            [current.get((device.device_id, model.model_id), 0) for model in models]
            for device in devices
        ]
        # The most replicas of each model that could exist, alone on every allowed device.
        self.ceiling = []
        for m, model in enumerate(models):
            fit = sum(self.room[d][m] for d in range(len(devices)))
            self.ceiling.append(fit if model.max_replicas is None else min(fit, model.max_replicas))
        # A model that fits on no allowed device does not hold the others at their minimums.
        self.holds_back = [self.ceiling[m] > 0 for m in range(len(models))]

    def configurations(self, d: int) -> list[tuple[int, ...]]:
        """Every replica count vector that fits on device ``d``."""
        found: list[tuple[int, ...]] = []
        limits = [min(self.ceiling[m], self.room[d][m]) for m in range(len(self.models))]

        def walk(m: int, left: int, prefix: tuple[int, ...]) -> None:
            if m == len(self.models):
                found.append(prefix)
                return
            for k in range(min(limits[m], left // self.footprint[m]) + 1):
                walk(m + 1, left - k * self.footprint[m], (*prefix, k))

        walk(0, self.capacity[d], ())
        return found

    def valid(self, counts: Sequence[int]) -> bool:
        """Rule 2: nobody above its minimum while a model that could fit is below its own."""
        below = any(counts[m] < self.minimum[m] and self.holds_back[m] for m in range(len(counts)))
        return not below or all(counts[m] <= self.minimum[m] for m in range(len(counts)))

    def key(self, counts: Sequence[int]) -> tuple[object, ...]:
        """Rules 1, 3 and 4 as a key to maximise (rule 2 is ``valid``)."""
        met = [min(counts[m], self.minimum[m]) for m in range(len(counts))]
        shortfall = sorted(met[m] - self.minimum[m] for m in range(len(counts)))
        extras = sorted(counts[m] - self.minimum[m] for m in range(len(counts)))
        return (sum(met), tuple(shortfall), sum(counts), tuple(extras), tuple(counts))

    def cost(self, d: int, config: Sequence[int]) -> tuple[int, int, int]:
        """Rule 5 on one device, to minimise: (replicas moved, same-model pairs, balance)."""
        moved = sum(abs(k - c) for k, c in zip(config, self.current[d], strict=True))
        pairs = sum(k * (k - 1) // 2 for k in config)
        used_mib = sum(k * f for k, f in zip(config, self.footprint, strict=True)) >> 20
        balance = used_mib * used_mib // max(1, self.capacity[d] >> 20)
        return moved, pairs, balance

    def placement(self, counts: Sequence[Sequence[int]], *, exact: bool) -> Placement:
        replicas: dict[ReplicaKey, int] = {}
        totals = [0] * len(self.models)
        for d, device in enumerate(self.devices):
            for m, model in enumerate(self.models):
                if counts[d][m]:
                    replicas[(device.device_id, model.model_id)] = counts[d][m]
                    totals[m] += counts[d][m]
        unmet = tuple(
            model.model_id for m, model in enumerate(self.models) if totals[m] < self.minimum[m]
        )
        return Placement(replicas, unmet, exact)


# ---------------------------------------------------------------------------------------------
# Exact: dynamic programme over devices, state = replica counts per model


def _exact(problem: _Problem, limit: int) -> list[list[int]] | None:
    """Per device, per model, the replica counts of the best placement; None past ``limit``.

    A count vector is encoded as one integer (digit m in radix 2 * ceiling[m] + 1, so adding two
    vectors within the ceilings never carries) and a cost (moved, pairs, balance) as
    moved * 2**96 + pairs * 2**64 + balance, which keeps the inner loop to integer additions and
    one dict look-up.
    """
    configurations = []
    budget = limit
    for d in range(len(problem.devices)):
        found = problem.configurations(d)
        budget -= len(found)
        if budget < 0:
            return None
        configurations.append(found)
    n_models = len(problem.models)
    place_value = [1] * n_models
    for m in range(1, n_models):
        place_value[m] = place_value[m - 1] * (2 * problem.ceiling[m - 1] + 1)
    radix = [2 * problem.ceiling[m] + 1 for m in range(n_models)]
    capped = [
        (place_value[m], radix[m], problem.ceiling[m])
        for m, model in enumerate(problem.models)
        if model.max_replicas is not None
    ]

    def encode(vector: Sequence[int]) -> int:
        return sum(k * place_value[m] for m, k in enumerate(vector))

    # layers[d][state] = (previous state, index of device d's configuration)
    layers: list[dict[int, tuple[int, int]]] = []
    states: dict[int, int] = {0: 0}  # state -> cost so far
    for d, found in enumerate(configurations):
        budget -= len(states) * len(found)
        if budget < 0:
            return None
        moves = []
        for index, config in enumerate(found):
            moved, pairs, balance = problem.cost(d, config)
            moves.append((encode(config), (moved << 96) + (pairs << 64) + balance, index))
        layer: dict[int, tuple[int, int]] = {}
        costs: dict[int, int] = {}
        for state, state_cost in states.items():
            for code, config_cost, index in moves:
                total = state + code
                if capped and any(total // pv % r > c for pv, r, c in capped):
                    continue
                cost = state_cost + config_cost
                best = costs.get(total)
                if best is None or cost < best:
                    costs[total] = cost
                    layer[total] = (state, index)
        layers.append(layer)
        states = costs

    def decode(code: int) -> tuple[int, ...]:
        return tuple(code // place_value[m] % radix[m] for m in range(n_models))

    vectors = {decode(code): code for code in states}
    final = vectors[max((v for v in vectors if problem.valid(v)), key=problem.key)]
    counts: list[list[int]] = [[] for _ in problem.devices]
    state = final
    for d in range(len(problem.devices) - 1, -1, -1):
        previous, index = layers[d][state]
        counts[d] = list(configurations[d][index])
        state = previous
    return counts


# ---------------------------------------------------------------------------------------------
# Greedy, for instances too large for the exact search


def _greedy(problem: _Problem) -> list[list[int]]:
    n_models = len(problem.models)
    counts = [[0] * n_models for _ in problem.devices]
    free = list(problem.capacity)
    totals = [0] * n_models

    def device_for(m: int) -> int | None:
        candidates = [
            d
            for d in range(len(problem.devices))
            if counts[d][m] < problem.room[d][m] and free[d] >= problem.footprint[m]
        ]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda d: (
                counts[d][m],  # spread before doubling up
                -(problem.current[d][m] > counts[d][m]),  # keep running replicas where they are
                -free[d],
                d,
            ),
        )

    def add(d: int, m: int) -> None:
        counts[d][m] += 1
        totals[m] += 1
        free[d] -= problem.footprint[m]

    # Minimums, round-robin, the largest footprints first (first-fit decreasing).
    order = sorted(range(n_models), key=lambda m: (-problem.footprint[m], m))
    progress = True
    while progress:
        progress = False
        for m in order:
            if totals[m] < min(problem.minimum[m], problem.ceiling[m]):
                d = device_for(m)
                if d is not None:
                    add(d, m)
                    progress = True
    if any(totals[m] < problem.minimum[m] and problem.holds_back[m] for m in range(n_models)):
        return counts  # rule 2: nobody above its minimum while one that fits is below
    # Then the most replicas: always the smallest model that still fits somewhere.
    while True:
        wanting = [
            m
            for m in range(n_models)
            if totals[m] < problem.ceiling[m] and device_for(m) is not None
        ]
        if not wanting:
            break
        m = min(
            wanting,
            key=lambda m: (problem.footprint[m], totals[m] - problem.minimum[m], m),
        )
        d = device_for(m)
        assert d is not None
        add(d, m)
    # Then even out the replicas above the minimums where one can replace another.
    for _ in range(sum(totals) + 1):
        if not _swap_once(problem, counts, free, totals):
            break
    return counts


def _swap_once(
    problem: _Problem, counts: list[list[int]], free: list[int], totals: list[int]
) -> bool:
    n_models = len(problem.models)
    for rich, poor in itertools.permutations(range(n_models), 2):
        extra_rich = totals[rich] - problem.minimum[rich]
        extra_poor = totals[poor] - problem.minimum[poor]
        if extra_rich < extra_poor + 2 or extra_rich <= 0 or totals[poor] >= problem.ceiling[poor]:
            continue
        for d in range(len(problem.devices)):
            if (
                counts[d][rich] > 0
                and counts[d][poor] < problem.room[d][poor]
                and free[d] + problem.footprint[rich] >= problem.footprint[poor]
            ):
                counts[d][rich] -= 1
                counts[d][poor] += 1
                totals[rich] -= 1
                totals[poor] += 1
                free[d] += problem.footprint[rich] - problem.footprint[poor]
                return True
    return False
