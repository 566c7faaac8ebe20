"""Limits on open streams, the calls that hold a job's events (StreamGenerate, Generate,
WatchJob): per caller, and watchers per job. Queued jobs per caller are the scheduler's to count
(``FleetSettings``)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from scheduler.errors import CallerLimitError

STREAM_RETRY_AFTER_S = 1.0
"""A stream frees when one of the caller's jobs ends; the server does not guess when."""


class StreamLimiter:
    """Counts open streams per key (a caller, or a job's id for its watchers); ``hold`` refuses
    one over ``max_per_caller``.

    ``max_per_caller`` 0 means no limit. The server runs on one event loop, so a plain Counter
    needs no lock.
    """

    def __init__(
        self, max_per_caller: int, what: str = "open streams", subject: str = "caller"
    ) -> None:
        self.max_per_caller = max_per_caller
        self._what = what
        self._subject = subject
        self._open: Counter[str] = Counter()

    def open_streams(self, caller: str) -> int:
        return self._open[caller]

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """One stream of ``caller`` for the ``with`` block; raises CallerLimitError when full."""
        if self.max_per_caller and self._open[caller] >= self.max_per_caller:
            raise CallerLimitError(
                self._what, self.max_per_caller, STREAM_RETRY_AFTER_S, self._subject
            )
        self._open[caller] += 1
        try:
            yield
        finally:
            self._open[caller] -= 1
            if not self._open[caller]:
                del self._open[caller]
