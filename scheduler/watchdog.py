"""The hang watchdog's clock: how long a replica may go without an event before it counts as hung.

A worker sends an event at every denoising step. A step that takes far longer than the recent
ones means the worker hangs (a stuck kernel, a deadlock): killing it frees the device, and the
scheduler's usual crash handling restarts it and runs its jobs again.

Work is measured in pixels x images of the batch. A gap is allowed ``factor`` times the recent
peak gap per unit of work, scaled to the batch's work; work above the largest measured counts
quadratically (attention grows with the square of the tokens). The allowance is never less than
``floor_s`` nor more than ``ceiling_s``. Before any measurement only ``floor_s`` applies, so the
floor must cover a first step at the model's largest request.

The peak decays: each gap lowers the remembered peak by ``DECAY`` before it is compared, so one
slow gap (a neighbour's burst, a swap-in) raises the allowance for the next few hundred steps,
not for the rest of the process' life, and a steady model's allowance tracks its real steps.
"""

from __future__ import annotations

DECAY = 0.98
"""The share of the remembered peak kept at each new gap: a spike fades to 1/10 in ~115 gaps."""


class StepClock:
    """Recent gaps between a model's replica events, and the limit they give."""

    def __init__(self, factor: float, floor_s: float, ceiling_s: float = 3600.0) -> None:
        if ceiling_s < floor_s:
            raise ValueError(f"the watchdog ceiling {ceiling_s}s is below its floor {floor_s}s")
        self.factor = factor
        self.floor_s = floor_s
        self.ceiling_s = ceiling_s
        self._seconds_per_unit: float | None = None
        self._largest_work = 0

    def observe(self, work: int, gap_s: float) -> None:
        """Fold in one gap between events of a batch of ``work`` (pixels x images)."""
        if work <= 0 or gap_s < 0:
            return
        self._largest_work = max(self._largest_work, work)
        rate = gap_s / work
        peak = self._seconds_per_unit
        self._seconds_per_unit = rate if peak is None else max(rate, peak * DECAY)

    def limit_s(self, work: int) -> float:
        """How long a batch of ``work`` may go without an event."""
        if self._seconds_per_unit is None or self._largest_work == 0:
            return self.floor_s
        growth = max(1.0, work / self._largest_work)
        expected = self._seconds_per_unit * work * growth
        return min(self.ceiling_s, max(self.floor_s, self.factor * expected))
