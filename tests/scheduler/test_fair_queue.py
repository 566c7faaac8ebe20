"""The model queue: priority first, callers take turns, FIFO per caller, batches by key."""

from __future__ import annotations

import asyncio

from engine.job import GenerationSpec
from scheduler.fair_queue import FairQueue
from scheduler.job import Job


def make_job(caller: str = "a", priority: int = 0, width: int = 64, images: int = 1) -> Job:
    spec = GenerationSpec(
        model="demo", prompt=caller, negative_prompt="", width=width, height=64,
        steps=2, guidance_scale=4.5, seed=0, num_images=images,
    )  # fmt: skip
    return Job(spec, priority=priority, caller=caller)


def size_key(job: Job) -> int:
    return job.spec.width


def drain(queue: FairQueue) -> list[Job]:
    served = []
    while len(queue):
        served.extend(queue.take(1, size_key))
    return served


def test_higher_priority_is_served_first_and_fifo_within_a_caller():
    queue = FairQueue(capacity=10)
    first, second = make_job("a"), make_job("a")
    urgent = make_job("a", priority=1)
    for job in (first, second, urgent):
        queue.push(job)

    assert drain(queue) == [urgent, first, second]


def test_a_flooding_caller_does_not_starve_another():
    queue = FairQueue(capacity=100)
    flood = [make_job("flooder") for _ in range(20)]
    for job in flood:
        queue.push(job)
    polite = make_job("polite")
    queue.push(polite)

    served = drain(queue)
    assert served.index(polite) == 1  # one flooder job, then the other caller's turn
    assert [job for job in served if job.caller == "flooder"] == flood


def test_jobs_ahead_follows_service_order():
    queue = FairQueue(capacity=10)
    a1, a2, b1 = make_job("a"), make_job("a"), make_job("b")
    for job in (a1, a2, b1):
        queue.push(job)

    assert [queue.jobs_ahead(job) for job in (a1, b1, a2)] == [0, 1, 2]


def test_take_batches_only_compatible_jobs_in_service_order():
    queue = FairQueue(capacity=10)
    a64, b128, c64, d64 = make_job("a"), make_job("b", width=128), make_job("c"), make_job("d")
    for job in (a64, b128, c64, d64):
        queue.push(job)

    assert queue.take(2, size_key) == [a64, c64]
    assert queue.take(4, size_key) == [b128]
    assert queue.take(4, size_key) == [d64]
    assert len(queue) == 0 and queue.take(4, size_key) == []


def test_remove_and_push_front():
    queue = FairQueue(capacity=10)
    a1, b1, a2 = make_job("a"), make_job("b"), make_job("a")
    for job in (a1, b1, a2):
        queue.push(job)

    assert queue.remove(b1) and not queue.remove(b1)
    retried = queue.take(1, size_key)[0]
    queue.push_front(retried)
    assert list(queue.in_service_order()) == [a1, a2]
    assert len(queue) == 2


def test_full_reflects_capacity():
    queue = FairQueue(capacity=2)
    queue.push(make_job())
    assert not queue.full
    queue.push(make_job())
    assert queue.full


async def test_wait_for_jobs_wakes_on_push():
    queue = FairQueue(capacity=2)
    waiter = asyncio.create_task(queue.wait_for_jobs())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.push(make_job())
    await asyncio.wait_for(waiter, timeout=5)


def test_a_batch_keeps_within_the_image_budget_the_footprint_was_measured_at():
    queue = FairQueue(capacity=10)
    three, two, one = make_job("a", images=3), make_job("b", images=2), make_job("c", images=1)
    for job in (three, two, one):
        queue.push(job)

    assert queue.take(4, size_key, max_images=4) == [three, one]
    assert queue.take(4, size_key, max_images=1) == [two]  # the next job always goes
