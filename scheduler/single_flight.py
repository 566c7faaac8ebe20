"""One flight of the single flight: a run shared by every caller of the same request.

A flight is a small state machine, so that who may attach and who cancels the run is decided in
one place:

    OWNED         --run cancelled, members wait-->  HANDING_OVER
    OWNED         --run cancelled, nobody waits-->  CLOSED
    HANDING_OVER  --run submitted again-------->  SHARED
    HANDING_OVER  --the last member leaves----->  CLOSED
    SHARED        --run cancelled, members wait-->  HANDING_OVER
    SHARED        --the last member leaves----->  CLOSED (and the run is cancelled)
    any           --the run ends--------------->  CLOSED

- OWNED: the run is the first caller's job; cancelling that job cancels the run.
- HANDING_OVER: the owner cancelled while others wait; the run ends and is submitted again for
  them (a newcomer may still attach: it gets the new run).
- SHARED: the run was submitted for the members; nobody owns it, and the last member to leave
  cancels it.
- CLOSED: the flight has left the table. Nobody attaches any more: an identical request starts a
  flight of its own, so it is never handed a run that is being cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from engine.job import LoadedModel, PreviewSettings
from scheduler.job import Job


class FlightState(StrEnum):
    OWNED = "owned"
    HANDING_OVER = "handing over"
    SHARED = "shared"
    CLOSED = "closed"


@dataclass(eq=False)
class Flight:
    """One run of the scheduler behind and the callers waiting on it (see the module docstring)."""

    key: str
    flight_key: tuple[str, PreviewSettings]
    job: Job  # the run: the owner's job while OWNED, then the job submitted for the members
    loaded: LoadedModel
    members: set[Job] = field(default_factory=set)
    # Events of ``job`` already handed to the members (a new member gets these first).
    seen: int = 0
    state: FlightState = FlightState.OWNED
    # The run is another server's (scheduler.shared_jobs): cancelling here never cancels it,
    # and its server stores its result.
    remote: bool = False

    @property
    def open(self) -> bool:
        """Whether a newcomer may attach."""
        return self.state is not FlightState.CLOSED

    def run_cancelled(self) -> None:
        """The run's own job was cancelled (by its owner, or its deadline passed)."""
        if self.state in (FlightState.OWNED, FlightState.SHARED):
            self.state = FlightState.HANDING_OVER if self.members else FlightState.CLOSED

    def attach(self, member: Job) -> None:
        if not self.open:
            raise RuntimeError("a closed flight takes no members")
        self.members.add(member)

    def member_left(self, member: Job) -> bool:
        """Forget ``member``; True when the run must be cancelled (nobody wants it any more)."""
        self.members.discard(member)
        if self.members or self.state is FlightState.OWNED:
            return False
        was_shared = self.state is FlightState.SHARED
        self.state = FlightState.CLOSED
        # While HANDING_OVER the run is already being cancelled by its owner.
        return was_shared

    @property
    def needs_handover(self) -> bool:
        """The run ended because its owner cancelled, and members still wait for a result."""
        return self.state is FlightState.HANDING_OVER and bool(self.members)

    def handed_over(self, run: Job) -> None:
        """``run`` was submitted for the members: it replaces the cancelled one."""
        if self.state is not FlightState.HANDING_OVER:
            raise RuntimeError(f"a flight is handed over only from HANDING_OVER, not {self.state}")
        self.job, self.seen, self.state = run, 0, FlightState.SHARED

    def close(self) -> None:
        self.state = FlightState.CLOSED
