"""The jobs waiting for one model: higher priority first, callers take turns within a priority,
first come first served within a caller. One caller flooding the queue cannot starve another."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator

from scheduler.job import Job


class FairQueue:
    """Bounded; ``pop``/``take`` follow service order: priority, then round-robin over callers."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # priority -> caller -> that caller's jobs; a caller's place in the OrderedDict is its
        # turn: serving it moves it to the back.
        self._levels: dict[int, OrderedDict[str, deque[Job]]] = {}
        self._size = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self._size >= self.capacity

    def push(self, job: Job) -> None:
        """Add at the back of the job's caller's line (the caller checks ``full`` first)."""
        self._line(job).append(job)
        self._size += 1
        self._wake()

    def push_front(self, job: Job) -> None:
        """Put a job back at the very front (a retry after its replica died): its caller's
        line gets it first and that caller is served next within its priority."""
        level = self._levels.setdefault(job.priority, OrderedDict())
        level.setdefault(job.caller, deque()).appendleft(job)
        level.move_to_end(job.caller, last=False)
        self._size += 1
        self._wake()

    def remove(self, job: Job) -> bool:
        """Take a job out wherever it is (a cancel); False if it is not queued."""
        level = self._levels.get(job.priority)
        line = level.get(job.caller) if level is not None else None
        if line is None or job not in line:
            return False
        line.remove(job)
        self._size -= 1
        self._prune(job.priority, job.caller)
        return True

    def take(
        self,
        limit: int,
        batch_key: Callable[[Job], Hashable],
        max_images: int | None = None,
    ) -> list[Job]:
        """The next job in service order and up to ``limit - 1`` more with the same batch key,
        also in service order, while their images stay within ``max_images`` (the next job is
        always taken). Empty if nothing waits."""
        order = list(self.in_service_order())
        if not order or limit < 1:
            return []
        key = batch_key(order[0])
        taken: list[Job] = []
        images = 0
        for job in order:
            if len(taken) == limit:
                break
            fits = max_images is None or not taken or images + job.spec.num_images <= max_images
            if batch_key(job) == key and fits:
                taken.append(job)
                images += job.spec.num_images
        for job in taken:
            self._take_out(job)
        return taken

    def in_service_order(self) -> Iterator[Job]:
        """Every queued job in the order ``take`` would serve them."""
        for priority in sorted(self._levels, reverse=True):
            lines = [list(line) for line in self._levels[priority].values()]
            for round_index in range(max((len(line) for line in lines), default=0)):
                for line in lines:
                    if round_index < len(line):
                        yield line[round_index]

    def caller_jobs(self, caller: str) -> int:
        """How many jobs ``caller`` has waiting, at every priority."""
        return sum(len(level.get(caller, ())) for level in self._levels.values())

    def jobs_ahead(self, job: Job) -> int:
        """How many queued jobs would be served before ``job``."""
        for index, queued in enumerate(self.in_service_order()):
            if queued is job:
                return index
        return self._size

    async def wait_for_jobs(self) -> None:
        """Return once at least one job is queued."""
        while self._size == 0:
            changed = self._changed
            await changed.wait()

    def _take_out(self, job: Job) -> None:
        level = self._levels[job.priority]
        line = level[job.caller]
        line.remove(job)
        self._size -= 1
        if line:
            level.move_to_end(job.caller)  # served: its next job waits for the others' turns
        self._prune(job.priority, job.caller)

    def _line(self, job: Job) -> deque[Job]:
        level = self._levels.setdefault(job.priority, OrderedDict())
        return level.setdefault(job.caller, deque())

    def _prune(self, priority: int, caller: str) -> None:
        level = self._levels.get(priority)
        if level is None:
            return
        if caller in level and not level[caller]:
            del level[caller]
        if not level:
            del self._levels[priority]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
