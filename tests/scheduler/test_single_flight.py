"""The single flight's state machine on its own: who may attach, and when the run is cancelled.

Jobs are stand-ins here (a flight only keeps them in a set); the end-to-end behaviour with real
workers is in tests/server/test_result_cache.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.single_flight import Flight, FlightState


def new_flight() -> Flight:
    run: Any = object()
    loaded: Any = object()
    return Flight("key", ("key", object()), run, loaded)  # type: ignore[arg-type]


def test_an_owner_that_cancels_alone_closes_the_flight() -> None:
    flight = new_flight()
    flight.run_cancelled()
    assert flight.state is FlightState.CLOSED and not flight.open
    with pytest.raises(RuntimeError):
        flight.attach(object())  # type: ignore[arg-type]


def test_members_waiting_get_the_run_handed_over_and_the_last_to_leave_cancels_it() -> None:
    flight = new_flight()
    first: Any = object()
    second: Any = object()
    flight.attach(first)
    flight.run_cancelled()
    assert flight.state is FlightState.HANDING_OVER and flight.needs_handover and flight.open
    flight.attach(second)  # a newcomer still attaches: it gets the new run
    again: Any = object()
    flight.handed_over(again)
    assert flight.state is FlightState.SHARED and flight.job is again and flight.seen == 0
    assert flight.member_left(first) is False
    assert flight.member_left(second) is True  # nobody wants the run any more
    assert flight.state is FlightState.CLOSED


def test_a_member_leaving_an_owned_flight_changes_nothing() -> None:
    flight = new_flight()
    member: Any = object()
    flight.attach(member)
    assert flight.member_left(member) is False
    assert flight.state is FlightState.OWNED


def test_the_last_member_leaving_during_a_handover_closes_without_a_second_cancel() -> None:
    flight = new_flight()
    member: Any = object()
    flight.attach(member)
    flight.run_cancelled()
    assert flight.member_left(member) is False  # the owner's cancel already stops the run
    assert flight.state is FlightState.CLOSED and not flight.needs_handover
    with pytest.raises(RuntimeError):
        flight.handed_over(object())  # type: ignore[arg-type]
