"""The hang watchdog's clock: how long a replica may go without an event before it counts as hung.

A worker sends an event at every denoising step. A step that takes far longer than any measured
one means the worker hangs (a stuck kernel, a deadlock): killing it frees the device, and the
scheduler's usual crash handling restarts it and runs its jobs again.

Work is measured in pixels x images of the batch. A gap is allowed ``factor`` times the longest
measured gap per unit of work, scaled to the batch's work; work above the largest measured
counts quadratically (attention grows with the square of the tokens), and nothing is ever
allowed less than ``floor_s``. Before any measurement only ``floor_s`` applies, so the floor must
cover a first step at the model's largest request.
"""

from __future__ import annotations


class StepClock:
    """Measured gaps between a model's replica events, and the limit they give."""

    def __init__(self, factor: float, floor_s: float) -> None:
        self.factor = factor
        self.floor_s = floor_s
        self._seconds_per_unit: float | None = None
        self._largest_work = 0

    def observe(self, work: int, gap_s: float) -> None:
        """Fold in one gap between events of a batch of ``work`` (pixels x images)."""
        if work <= 0:
            return
        self._largest_work = max(self._largest_work, work)
        rate = gap_s / work
        if self._seconds_per_unit is None or rate > self._seconds_per_unit:
            self._seconds_per_unit = rate

    def limit_s(self, work: int) -> float:
        """How long a batch of ``work`` may go without an event."""
        if self._seconds_per_unit is None or self._largest_work == 0:
            return self.floor_s
        growth = max(1.0, work / self._largest_work)
        expected = self._seconds_per_unit * work * growth
        return max(self.floor_s, self.factor * expected)
