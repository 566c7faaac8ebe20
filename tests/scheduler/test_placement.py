"""Placement: the rules one by one, then the exact search against a brute force on random cases."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import pytest

from scheduler.inventory import DeviceSnapshot
from scheduler.placement import (
    DeviceCapacity,
    ModelDemand,
    Placement,
    ReplicaChange,
    describe_plan,
    device_capacities,
    diff_placement,
    place,
)

GIB = 1 << 30


def devices(*capacities: int) -> list[DeviceCapacity]:
    return [DeviceCapacity(f"gpu{i}", capacity) for i, capacity in enumerate(capacities)]


def model(
    model_id: str,
    footprint: int,
    low: int = 1,
    high: int | None = None,
    allowed: Sequence[str] | None = None,
    limits: Mapping[str, int] | None = None,
) -> ModelDemand:
    return ModelDemand(
        model_id, footprint, low, high, frozenset(allowed) if allowed else None, limits or {}
    )


def may_hold(m: ModelDemand, device: DeviceCapacity) -> int:
    """The most replicas of ``m`` the device may hold, by memory, allowed devices and limits."""
    if m.allowed_devices is not None and device.device_id not in m.allowed_devices:
        return 0
    limit = m.device_limits.get(device.device_id, 99)
    return min(device.capacity_bytes // m.footprint_bytes, limit)


def assert_valid(
    placement: Placement, devs: Sequence[DeviceCapacity], models: Sequence[ModelDemand]
) -> None:
    """The hard rules: no over-commit, maximums, allowed devices, rule 2."""
    footprints = {m.model_id: m.footprint_bytes for m in models}
    for device in devs:
        assert placement.used_bytes(device.device_id, footprints) <= device.capacity_bytes
    totals = placement.per_model()
    for m in models:
        if m.max_replicas is not None:
            assert totals.get(m.model_id, 0) <= m.max_replicas
        if m.allowed_devices is not None:
            for (device_id, model_id), count in placement.replicas.items():
                if model_id == m.model_id and count:
                    assert device_id in m.allowed_devices
        for device in devs:
            assert placement.count(device.device_id, m.model_id) <= may_hold(m, device)
    below = [
        m
        for m in models
        if totals.get(m.model_id, 0) < m.min_replicas and any(may_hold(m, d) for d in devs)
    ]
    if below:
        assert all(totals.get(m.model_id, 0) <= m.min_replicas for m in models)
    assert set(placement.unmet_minimums) == {
        m.model_id for m in models if totals.get(m.model_id, 0) < m.min_replicas
    }


# ---------------------------------------------------------------------------------------------
# The rules


def test_minimums_come_first():
    # Filling the device with the small model would place 3; the large one's minimum comes first.
    placement = place(devices(10), [model("large", 6), model("small", 3)])

    assert placement.per_model() == {"large": 1, "small": 1}
    assert placement.unmet_minimums == ()


def test_never_over_commits_a_device():
    devs = devices(10, 7, 0)
    models = [model("a", 4, 0), model("b", 3, 0)]

    placement = place(devs, models)

    assert_valid(placement, devs, models)
    # 5 fit either way (b alone: 3 + 2); the fair split fills both devices to the byte.
    assert placement.replicas == {
        ("gpu0", "a"): 1, ("gpu0", "b"): 2, ("gpu1", "a"): 1, ("gpu1", "b"): 1,
    }  # fmt: skip


def test_spreads_a_model_across_devices_before_doubling_up():
    placement = place(devices(10, 10, 10), [model("a", 4, 1, 3)])

    assert placement.replicas == {("gpu0", "a"): 1, ("gpu1", "a"): 1, ("gpu2", "a"): 1}


def test_total_replicas_come_before_spreading():
    # Spreading "a" over both devices would leave no room for "b"; 3 replicas beat 2.
    placement = place(devices(20, 12), [model("a", 10, 1), model("b", 12, 1)])

    assert placement.replicas == {("gpu0", "a"): 2, ("gpu1", "b"): 1}


def test_no_model_above_its_minimum_while_another_is_below():
    # Two replicas of "big" cannot fit; "small" must not take the space beyond its minimum.
    placement = place(devices(10), [model("big", 6, 2), model("small", 1, 1)])

    assert placement.per_model() == {"big": 1, "small": 1}
    assert placement.unmet_minimums == ("big",)


def test_a_model_that_fits_nowhere_does_not_hold_the_others_back():
    placement = place(devices(10, 8), [model("huge", 11, 1), model("small", 2, 1)])

    assert placement.per_model() == {"small": 9}
    assert placement.unmet_minimums == ("huge",)


def test_shortfall_is_shared_when_minimums_do_not_fit():
    placement = place(devices(4), [model("a", 1, 3), model("b", 1, 3)])

    assert sorted(placement.per_model().values()) == [2, 2]
    assert placement.unmet_minimums == ("a", "b")


def test_max_replicas_is_respected():
    placement = place(devices(100, 100), [model("a", 1, 1, 5)])

    assert placement.per_model() == {"a": 5}


def test_most_replicas_go_to_the_smallest_model_when_maximums_are_unlimited():
    placement = place(devices(24), [model("medium", 6), model("large", 9)])

    assert placement.per_model() == {"medium": 2, "large": 1}  # 3 replicas; 1 + 1 would be 2


def test_round_robin_between_models_breaks_ties():
    placement = place(devices(5), [model("a", 1, 0), model("b", 1, 0)])

    assert placement.per_model() == {"a": 3, "b": 2}  # as even as it gets, the first model first


def test_round_robin_counts_replicas_above_the_minimums():
    placement = place(devices(10), [model("a", 1, 4), model("b", 1, 0)])

    assert placement.per_model() == {"a": 7, "b": 3}


def test_allowed_devices_are_respected():
    devs = devices(10, 10)
    placement = place(devs, [model("a", 5, 1, None, ["gpu1"]), model("b", 5, 0)])

    assert placement.count("gpu0", "a") == 0
    assert placement.count("gpu1", "a") == 2
    assert placement.count("gpu0", "b") == 2


def test_device_limits_cap_a_model_on_a_device_whatever_its_memory():
    # Memory for 4 on gpu0, but an out-of-memory cap of 1 there: the rest go to gpu1.
    devs = devices(4 * GIB, 4 * GIB)
    placement = place(devs, [model("a", GIB, 3, None, limits={"gpu0": 1})])

    assert (placement.count("gpu0", "a"), placement.count("gpu1", "a")) == (1, 4)
    assert place(devs, [model("a", GIB, 1, limits={"gpu0": 0, "gpu1": 0})]).unmet_minimums == ("a",)


def test_a_model_allowed_on_no_device_is_unmet():
    placement = place(devices(10), [model("a", 5, 1, None, ["cpu"])])

    assert placement.replicas == {}
    assert placement.unmet_minimums == ("a",)


def test_running_replicas_stay_where_they_are_when_that_is_as_good():
    current = {("gpu1", "a"): 2}

    placement = place(devices(4, 4), [model("a", 2, 1, 2)], current=current)

    assert placement.replicas == current  # not moved, although spreading would put one on gpu0


def test_a_shrinking_device_drains_the_model_above_its_minimum():
    current = {("gpu0", "a"): 1, ("gpu0", "b"): 2}
    models = [model("a", 4, 1), model("b", 3, 1)]

    # Another tenant took memory: gpu0 now holds 8 of the 10 our replicas use.
    placement = place(devices(8), models, current=current)
    diff = diff_placement(current, placement, models)

    assert placement.replicas == {("gpu0", "a"): 1, ("gpu0", "b"): 1}
    assert diff.drains == (ReplicaChange("gpu0", "b", -1),)
    assert diff.adds == ()


def test_diff_drains_models_above_their_minimum_first_and_adds_the_neediest_first():
    models = [model("a", 1, 1), model("b", 1, 3), model("c", 1, 2)]
    current = {("gpu0", "a"): 3, ("gpu0", "b"): 1, ("gpu1", "c"): 3, ("gpu1", "b"): 1}
    target = {("gpu0", "a"): 1, ("gpu0", "b"): 2, ("gpu1", "c"): 2, ("gpu1", "b"): 1}

    diff = diff_placement(current, target, models)

    assert diff.drains == (ReplicaChange("gpu0", "a", -2), ReplicaChange("gpu1", "c", -1))
    assert diff.adds == (ReplicaChange("gpu0", "b", 1),)
    assert diff_placement(target, target, models).empty


def test_invalid_input_is_refused():
    with pytest.raises(ValueError, match="footprint"):
        place(devices(1), [model("a", 0)])
    with pytest.raises(ValueError, match="max_replicas"):
        place(devices(1), [model("a", 1, 2, 1)])
    with pytest.raises(ValueError, match="model ids"):
        place(devices(1), [model("a", 1), model("a", 2)])
    with pytest.raises(ValueError, match="device ids"):
        place([DeviceCapacity("x", 1), DeviceCapacity("x", 2)], [model("a", 1)])


def test_no_devices_or_no_models():
    assert place([], [model("a", 1)]).unmet_minimums == ("a",)
    assert place(devices(10), []).replicas == {}


def snapshot(device_id: str, total_gib: float, free_gib: float) -> DeviceSnapshot:
    total, free = round(total_gib * GIB), round(free_gib * GIB)
    return DeviceSnapshot(device_id, "cuda", f"GPU {device_id}", total, free, total - free)


def test_device_capacities_add_our_replicas_and_subtract_the_reserve():
    snapshots = [snapshot("g0", 80, 30), snapshot("g1", 24, 0.5)]

    capacities = device_capacities(snapshots, reserve_bytes=GIB, ours_bytes={"g0": 20 * GIB})

    assert capacities == [DeviceCapacity("g0", 49 * GIB), DeviceCapacity("g1", 0)]


def test_describe_plan_has_a_line_per_device():
    snapshots = [snapshot("g0", 80, 76), snapshot("g1", 24, 22)]
    models = [model("medium", 12 * GIB), model("large", 17 * GIB, 1, 1), model("xl", 90 * GIB)]
    placement = place(device_capacities(snapshots, GIB), models)
    footprints = {m.model_id: m.footprint_bytes for m in models}

    text = describe_plan(snapshots, placement, footprints, reserve_bytes=GIB)

    lines = text.splitlines()
    assert lines[0].split() == [
        "device", "name", "total", "GiB", "free", "GiB", "medium", "large", "xl",
        "placed", "GiB", "headroom", "GiB",
    ]  # fmt: skip
    g0 = next(line for line in lines if line.startswith("g0 "))
    g1 = next(line for line in lines if line.startswith("g1 "))
    # "xl" fits nowhere, so it does not hold the others back: 6 mediums fill g0, the large g1.
    assert g0.split()[2:] == ["g0", "80.0", "76.0", "6", "0", "0", "72.0", "3.0"]
    assert g1.split()[2:] == ["g1", "24.0", "22.0", "0", "1", "0", "17.0", "4.0"]
    assert lines[-2].split() == ["total", "6", "1", "0"]
    assert lines[-1] == "minimum not met: xl"


# ---------------------------------------------------------------------------------------------
# Against a brute force


def brute_force(
    devs: Sequence[DeviceCapacity],
    models: Sequence[ModelDemand],
    current: Mapping[tuple[str, str], int],
) -> tuple[tuple[object, ...], tuple[int, int, int]]:
    """The best (key, cost) over every assignment, straight from the rules in the docstring."""
    options = []
    for device in devs:
        ranges = [range(may_hold(m, device) + 1) for m in models]
        options.append(
            [
                counts
                for counts in itertools.product(*ranges)
                if sum(k * m.footprint_bytes for k, m in zip(counts, models, strict=True))
                <= device.capacity_bytes
            ]
        )
    fits_somewhere = [any(may_hold(m, d) for d in devs) for m in models]
    best: tuple[tuple[object, ...], tuple[int, int, int]] | None = None
    for choice in itertools.product(*options):
        totals = [sum(device[m] for device in choice) for m in range(len(models))]
        if any(
            m.max_replicas is not None and t > m.max_replicas
            for t, m in zip(totals, models, strict=True)
        ):
            continue
        lows = [m.min_replicas for m in models]
        below = any(t < lo and f for t, lo, f in zip(totals, lows, fits_somewhere, strict=True))
        if below and any(t > lo for t, lo in zip(totals, lows, strict=True)):
            continue
        key = placement_key(totals, lows)
        moved = sum(
            abs(choice[d][m] - current.get((devs[d].device_id, models[m].model_id), 0))
            for d in range(len(devs))
            for m in range(len(models))
        )
        pairs = sum(k * (k - 1) // 2 for counts in choice for k in counts)
        balance = sum(
            balance_of(device, counts, models) for device, counts in zip(devs, choice, strict=True)
        )
        cost = (moved, pairs, balance)
        if best is None or (key, tuple(-c for c in cost)) > (best[0], tuple(-c for c in best[1])):
            best = (key, cost)
    assert best is not None
    return best


def balance_of(device: DeviceCapacity, counts: Sequence[int], models: Sequence[ModelDemand]) -> int:
    """used^2 / capacity in MiB: least when every device fills in proportion to its size."""
    used_mib = sum(k * m.footprint_bytes for k, m in zip(counts, models, strict=True)) >> 20
    return used_mib * used_mib // max(1, device.capacity_bytes >> 20)


def placement_key(totals: Sequence[int], lows: Sequence[int]) -> tuple[object, ...]:
    met = [min(t, lo) for t, lo in zip(totals, lows, strict=True)]
    return (
        sum(met),
        tuple(sorted(x - lo for x, lo in zip(met, lows, strict=True))),
        sum(totals),
        tuple(sorted(t - lo for t, lo in zip(totals, lows, strict=True))),
        tuple(totals),
    )


def key_and_cost(
    placement: Placement,
    devs: Sequence[DeviceCapacity],
    models: Sequence[ModelDemand],
    current: Mapping[tuple[str, str], int],
) -> tuple[tuple[object, ...], tuple[int, int, int]]:
    totals = [placement.per_model().get(m.model_id, 0) for m in models]
    moved = sum(
        abs(placement.count(d.device_id, m.model_id) - current.get((d.device_id, m.model_id), 0))
        for d in devs
        for m in models
    )
    pairs = sum(k * (k - 1) // 2 for k in placement.replicas.values())
    balance = sum(
        balance_of(d, [placement.count(d.device_id, m.model_id) for m in models], models)
        for d in devs
    )
    return placement_key(totals, [m.min_replicas for m in models]), (moved, pairs, balance)


def random_case(
    rng: random.Random,
) -> tuple[list[DeviceCapacity], list[ModelDemand], dict[tuple[str, str], int]]:
    unit = 256 << 20  # MiB-scale sizes, so that the balance term counts
    while True:
        devs = devices(*(unit * rng.randint(0, 10) for _ in range(rng.randint(1, 3))))
        models = []
        for index in range(rng.randint(1, 3)):
            low = rng.randint(0, 2)
            high = None if rng.random() < 0.5 else low + rng.randint(0, 3)
            allowed = None
            if rng.random() < 0.2:
                allowed = [d.device_id for d in devs if rng.random() < 0.6]
            limits = None
            if rng.random() < 0.2:
                limits = {d.device_id: rng.randint(0, 2) for d in devs if rng.random() < 0.6}
            models.append(model(f"m{index}", unit * rng.randint(1, 6), low, high, allowed, limits))
        current: dict[tuple[str, str], int] = {}
        if rng.random() < 0.3:
            for d in devs:
                for m in models:
                    if rng.random() < 0.3:
                        current[(d.device_id, m.model_id)] = rng.randint(1, 2)
        size = 1
        for d in devs:
            per_device = 1
            for m in models:
                per_device *= d.capacity_bytes // m.footprint_bytes + 1
            size *= per_device
        if size <= 20_000:
            return devs, models, current


@pytest.mark.parametrize("seed", range(6))
def test_exact_search_matches_a_brute_force_on_random_small_cases(seed):
    rng = random.Random(seed)
    for _ in range(150):
        devs, models, current = random_case(rng)

        placement = place(devs, models, current=current)

        assert placement.exact
        assert_valid(placement, devs, models)
        context = f"devices={devs} models={models} current={current} got={placement}"
        assert key_and_cost(placement, devs, models, current) == brute_force(
            devs, models, current
        ), context


@pytest.mark.parametrize("seed", range(3))
def test_the_greedy_keeps_the_hard_rules_on_random_cases(seed):
    rng = random.Random(100 + seed)
    for _ in range(150):
        devs, models, current = random_case(rng)

        placement = place(devs, models, current=current, exact_limit=0)

        assert not placement.exact
        assert_valid(placement, devs, models)


def test_large_instances_fall_back_to_the_greedy_and_stay_valid():
    devs = devices(*[141 * GIB] * 16)
    models = [model("medium", 13 * GIB), model("large", 19 * GIB, 2), model("demo", GIB, 0, 5)]

    placement = place(devs, models)

    assert not placement.exact
    assert_valid(placement, devs, models)
    # The upper bound: 10 of medium or large per device (141 // 13), and the 5 demos.
    assert placement.total == 16 * 10 + 5
    assert placement.per_model()["demo"] == 5
    # Swaps even out the replicas above the minimums: a large fits where a medium leaves 11 GiB.
    assert placement.per_model()["large"] == 16
