"""WatchJob envelopes built once per job event and shared by every watcher of the job.

A result watched by N clients used to be published (hashed, uploaded) and converted to protobuf
N times, once per watcher, on the event loop. Here the first watcher to reach an event builds
its envelope; the others await the same task and yield the same message (gRPC only reads it).

Every watcher reads the job's history in order, so each is at a position in it. A preview's
envelope (the bulky, transient kind) is dropped once every current watcher is past it: a long job
watched throughout holds the previews still ahead of its slowest watcher, not all of them. A
watcher that joins later rebuilds the previews it replays (its result and small events are still
shared). Everything of a job goes with its last watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from engine.job import StepPreview
from pointillist.v1 import jobs_pb2 as jobs_pb
from scheduler.job import Job, JobEvent
from server import conversion
from server.output_store import OutputPublisher
from server.servicer import published

_Entry = tuple[JobEvent, "asyncio.Future[jobs_pb.WatchJobResponse]"]


class _JobEnvelopes:
    """One job's envelopes, by position in its history (the event is kept beside its task and
    checked by identity, so a history that changed under a watcher only costs a rebuild)."""

    def __init__(self, owner: SharedEnvelopes, job: Job) -> None:
        self._owner = owner
        self._job = job
        self._built: dict[int, _Entry] = {}
        self._positions: Counter[int] = Counter()  # how many watchers are at each position
        self._lowest = 0  # the slowest watcher's position: previews below it are dropped

    @property
    def watchers(self) -> int:
        return self._positions.total()

    @property
    def held(self) -> int:
        """Envelopes held now (tests read it)."""
        return len(self._built)

    def join(self) -> _Watcher:
        self._positions[0] += 1
        self._lowest = 0
        return _Watcher(self)

    def leave(self, position: int) -> None:
        self._remove(position)
        if self._positions:
            self._raise_lowest(min(self._positions))

    def advance(self, position: int) -> None:
        """A watcher at ``position`` yielded that event and moves on to the next."""
        self._remove(position)
        self._positions[position + 1] += 1
        if position == self._lowest and position not in self._positions:
            self._raise_lowest(position + 1)  # every other watcher is further on already

    async def envelope(self, position: int, event: JobEvent) -> jobs_pb.WatchJobResponse:
        entry = self._built.get(position)
        if entry is None or entry[0] is not event:
            entry = (event, asyncio.ensure_future(self._build(event)))
            self._built[position] = entry
            entry[1].add_done_callback(lambda task: self._forget_failure(position, task))
        # Shielded: a watcher that leaves mid-build must not cancel the build the others await.
        return await asyncio.shield(entry[1])

    async def _build(self, event: JobEvent) -> jobs_pb.WatchJobResponse:
        self._owner.built[type(event).__name__] += 1
        return conversion.watch_response(self._job, await published(self._owner.outputs, event))

    def _forget_failure(
        self, position: int, task: asyncio.Future[jobs_pb.WatchJobResponse]
    ) -> None:
        """A failed build goes to the watchers awaiting it; the next one to come tries again."""
        failed = task.cancelled() or task.exception() is not None
        entry = self._built.get(position)
        if failed and entry is not None and entry[1] is task:
            del self._built[position]

    def _remove(self, position: int) -> None:
        self._positions[position] -= 1
        if self._positions[position] <= 0:
            del self._positions[position]

    def _raise_lowest(self, lowest: int) -> None:
        """``lowest`` is the slowest watcher's position now: drop the previews behind it."""
        if lowest <= self._lowest:
            return
        for position in range(self._lowest, lowest):
            entry = self._built.get(position)
            if entry is not None and isinstance(entry[0], StepPreview):
                del self._built[position]
        self._lowest = lowest


class _Watcher:
    """One watcher's place in its job's history."""

    def __init__(self, shared: _JobEnvelopes) -> None:
        self._shared = shared
        self.position = 0

    async def envelope(self, event: JobEvent) -> jobs_pb.WatchJobResponse:
        """The envelope of ``event``, the next one in this watcher's replay of the history."""
        envelope = await self._shared.envelope(self.position, event)
        self._shared.advance(self.position)
        self.position += 1
        return envelope


class SharedEnvelopes:
    """The envelopes of the jobs being watched now; a job's are dropped with its last watcher,
    so finished jobs cost no second copy of their images."""

    def __init__(self, outputs: OutputPublisher | None) -> None:
        self.outputs = outputs
        self._jobs: dict[str, _JobEnvelopes] = {}
        self.built: Counter[str] = Counter()
        """Envelopes built so far by event kind (tests and benchmarks read it: one per event,
        not per watcher)."""

    def of(self, job_id: str) -> _JobEnvelopes | None:
        """The shared envelopes of a job being watched now (tests read them)."""
        return self._jobs.get(job_id)

    @contextlib.contextmanager
    def watching(self, job: Job) -> Iterator[_Watcher]:
        shared = self._jobs.get(job.id)
        if shared is None:
            shared = self._jobs[job.id] = _JobEnvelopes(self, job)
        watcher = shared.join()
        try:
            yield watcher
        finally:
            shared.leave(watcher.position)
            if shared.watchers == 0 and self._jobs.get(job.id) is shared:
                del self._jobs[job.id]
