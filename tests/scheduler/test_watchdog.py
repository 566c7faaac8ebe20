"""The hang watchdog's allowance: follows measured steps, forgets a slow gap, stays bounded."""

from __future__ import annotations

import pytest

from scheduler.watchdog import StepClock

WORK = 64 * 64  # one 64x64 image


def steady(clock: StepClock, gap_s: float, count: int) -> None:
    for _ in range(count):
        clock.observe(WORK, gap_s)


def test_before_any_step_the_floor_alone_applies():
    assert StepClock(10.0, 3.0).limit_s(WORK) == 3.0


def test_the_allowance_is_factor_times_the_measured_gap_scaled_to_the_work():
    clock = StepClock(10.0, 0.0)
    steady(clock, 0.5, 3)

    assert clock.limit_s(WORK) == pytest.approx(5.0)
    assert clock.limit_s(WORK // 2) == pytest.approx(2.5)
    # Above the largest batch measured, quadratically: twice the work, four times the time.
    assert clock.limit_s(2 * WORK) == pytest.approx(20.0)


def test_one_slow_gap_raises_the_allowance_and_then_fades_back():
    clock = StepClock(10.0, 0.0)
    steady(clock, 0.1, 10)
    normal = clock.limit_s(WORK)

    clock.observe(WORK, 10.0)  # one gap a hundred times the others
    raised = clock.limit_s(WORK)
    assert raised == pytest.approx(100 * normal)

    steady(clock, 0.1, 500)
    assert clock.limit_s(WORK) == pytest.approx(normal)  # not raised for good


def test_the_allowance_never_leaves_floor_and_ceiling():
    clock = StepClock(10.0, 2.0, ceiling_s=60.0)
    steady(clock, 0.001, 5)
    assert clock.limit_s(WORK) == 2.0
    clock.observe(WORK, 1000.0)
    assert clock.limit_s(WORK) == 60.0


def test_a_ceiling_under_the_floor_is_refused():
    with pytest.raises(ValueError, match="below its floor"):
        StepClock(10.0, 120.0, ceiling_s=60.0)
