"""Each batch member's outcome, told to the caller the moment it is decided.

A member cancelled mid-loop, or one whose images are encoded while its batch-mates are still
decoding, must not wait for the whole batch: its caller sees CANCELLED or its result at once.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.job import GenerationCancelled, GenerationOutput

BatchOutcome = GenerationOutput | GenerationCancelled
OutcomeCallback = Callable[[int, BatchOutcome], None]


class BatchOutcomes:
    """One slot per member; setting a slot calls ``on_outcome(index, outcome)``, once."""

    def __init__(self, size: int, on_outcome: OutcomeCallback | None = None) -> None:
        self._slots: list[BatchOutcome | None] = [None] * size
        self._on_outcome = on_outcome

    def __getitem__(self, index: int) -> BatchOutcome | None:
        return self._slots[index]

    def __setitem__(self, index: int, outcome: BatchOutcome) -> None:
        if self._slots[index] is not None:
            raise RuntimeError(f"batch member {index} already has an outcome")
        self._slots[index] = outcome
        if self._on_outcome is not None:
            self._on_outcome(index, outcome)

    def filled(self) -> list[BatchOutcome]:
        if any(outcome is None for outcome in self._slots):  # every path fills every slot
            raise RuntimeError("a batch member was left without an outcome")
        return [outcome for outcome in self._slots if outcome is not None]
