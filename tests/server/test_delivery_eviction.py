"""Shared WatchJob envelopes stay bounded while a long job is watched (issue 14): a preview's
envelope is dropped once every current watcher is past it, the small events and the result stay
shared, a watcher that joins later still gets every event, and a job's envelopes go with its
last watcher. A real Job and the real conversion; no server needed for the bookkeeping."""

from __future__ import annotations

from engine.job import EncodedImage, GenerationSpec, StepPreview, StepProgress
from scheduler.job import Job, JobEvent, Queued, Started
from server.delivery import SharedEnvelopes
from tests.scheduler.test_result_cache_parts import CPU, output

STEPS = 10


def long_job() -> tuple[Job, list[JobEvent]]:
    spec = GenerationSpec(
        model="demo", prompt="long", negative_prompt="", width=64, height=64,
        steps=STEPS, guidance_scale=4.5, seed=0, num_images=1,
    )  # fmt: skip
    job = Job(spec)
    events: list[JobEvent] = [Queued(0, 0.0), Started("demo-0", CPU)]
    for step in range(1, STEPS + 1):
        events.append(StepProgress(step, STEPS, 0.1 * step, 0.1 * (STEPS - step), 10.0))
        preview = EncodedImage(b"preview %d" % step, "image/jpeg", 8, 8, seed=0)
        events.append(StepPreview(step, (preview,)))
    events.append(output((EncodedImage(b"final", "image/png", 64, 64, seed=0),)))
    for event in events:
        job.publish(event)
    return job, events


async def test_previews_every_watcher_passed_are_dropped_and_late_watchers_get_everything() -> None:
    job, events = long_job()
    envelopes = SharedEnvelopes(None)
    with envelopes.watching(job) as fast, envelopes.watching(job) as slow:
        shared = envelopes.of(job.id)
        assert shared is not None and shared.watchers == 2
        sent = [await fast.envelope(event) for event in events]
        assert shared.held == len(events)  # the slow watcher has every preview still ahead

        for event in events[:6]:  # Queued, Started, step 1, preview 1, step 2, preview 2
            await slow.envelope(event)
        assert shared.held == len(events) - 2  # the two previews both have sent are gone

        with envelopes.watching(job) as late:  # replays from the start: rebuilt, same bytes
            replayed = [await late.envelope(event) for event in events]
            assert [m.SerializeToString() for m in replayed] == [
                m.SerializeToString() for m in sent
            ]
            assert envelopes.built["StepPreview"] == STEPS + 2  # only the dropped two again
        assert shared.held == len(events) - 2

    assert envelopes.of(job.id) is None  # everything of the job went with its last watcher
    assert envelopes.built["GenerationOutput"] == 1
    assert sum(envelopes.built.values()) == len(events) + 2


async def test_a_slow_watcher_that_leaves_releases_the_previews_it_held() -> None:
    job, events = long_job()
    envelopes = SharedEnvelopes(None)
    with envelopes.watching(job) as fast:
        with envelopes.watching(job) as slow:
            await slow.envelope(events[0])
            for event in events[:-1]:
                await fast.envelope(event)
            shared = envelopes.of(job.id)
            assert shared is not None and shared.held == len(events) - 1
        # Only the small events stay (a late watcher shares them), no preview is kept.
        assert shared.held == len(events) - 1 - STEPS
        await fast.envelope(events[-1])
        assert shared.held == len(events) - STEPS
