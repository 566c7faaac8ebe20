"""The result cache and single flight, end to end: a real server, a real worker, the demo model.

Replica work is counted where the cache would have to pass to reach a replica: the scheduler's
``submit`` (every job a replica runs goes through it).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from pointillist import Client, Progress, Queued, Result
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.caching_scheduler import CachingScheduler
from scheduler.job import Job, JobState
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.holds import new_hold

QUICK: dict[str, Any] = {"width": 64, "height": 64, "steps": 2}
# The runs that must still be going when the next caller arrives are held after their first step
# (tests.holds) and released by the test, so no outcome depends on how fast the machine is.
HELD: dict[str, Any] = {"width": 64, "height": 64, "steps": 4}
TIMEOUT_S = 120


class SubmitCounter:
    """Counts the jobs handed to the fleet scheduler (the only way to a replica)."""

    def __init__(self, server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
        fleet = server.scheduler
        self.count = 0
        original = fleet.submit

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(fleet, "submit", counting)


@pytest.fixture(scope="module")
def cached_server() -> Iterator[ServerThread]:
    server = ServerThread(demo_settings(result_cache="memory")).start()
    yield server
    server.stop()


@pytest.fixture
def client(cached_server: ServerThread) -> Iterator[Client]:
    with Client(cached_server.address) as connected:
        yield connected


@pytest.fixture
def submits(cached_server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> SubmitCounter:
    return SubmitCounter(cached_server, monkeypatch)


@pytest.fixture
def results(cached_server: ServerThread) -> CachingScheduler:
    assert cached_server.running is not None and cached_server.running.results is not None
    return cached_server.running.results


def unique_prompt() -> str:
    return f"a lighthouse at dusk {uuid.uuid4().hex[:8]}"


def test_a_hit_never_reaches_a_replica_and_returns_the_same_bytes(
    client: Client, submits: SubmitCounter, results: CachingScheduler
) -> None:
    prompt = unique_prompt()
    first = client.generate(prompt, seed=11, num_images=2, **QUICK)
    assert submits.count == 1
    hits_before = results.hits

    with client.stream(prompt, seed=11, num_images=2, **QUICK) as stream:
        events = list(stream)

    assert submits.count == 1, "a hit must not submit a job"
    assert results.hits == hits_before + 1
    (again,) = events  # no queued, started or progress: the result alone
    assert isinstance(again, Result)
    assert again.cached and not first.cached
    assert [image.data for image in again.images] == [image.data for image in first.images]
    assert again.seeds == first.seeds == [11, 12]
    assert again.reproducibility == first.reproducibility
    assert again.timings.denoising_s == 0.0 and again.timings.queue_wait_s == 0.0


def test_anything_that_changes_the_images_misses(client: Client, submits: SubmitCounter) -> None:
    prompt = unique_prompt()
    client.generate(prompt, seed=3, **QUICK)
    changed: list[dict[str, Any]] = [
        {"seed": 4},
        {"seed": 3, "negative_prompt": "blurry"},
        {"seed": 3, "output_format": "jpeg", "quality": 50},
    ]
    outcomes = [client.generate(prompt, **QUICK, **change) for change in changed]

    assert submits.count == 1 + len(changed)
    assert not any(result.cached for result in outcomes)
    # Previews never change the result: a hit (and the hit has no preview events).
    with client.stream(prompt, seed=3, preview_every=1, **QUICK) as stream:
        events = list(stream)
    assert [type(event) for event in events] == [Result]
    assert submits.count == 1 + len(changed)


def test_a_request_without_a_seed_is_never_cached(client: Client, submits: SubmitCounter) -> None:
    prompt = unique_prompt()
    first = client.generate(prompt, **QUICK)
    # The seed the server chose, sent back explicitly, is a deterministic request of its own:
    # it was never stored, so it runs.
    second = client.generate(prompt, seed=first.seeds[0], **QUICK)
    third = client.generate(prompt, **QUICK)

    assert submits.count == 3
    assert not (first.cached or second.cached or third.cached)
    assert second.images[0].data == first.images[0].data


def test_a_hit_submitted_as_a_job_can_be_watched_and_fetched(
    client: Client, submits: SubmitCounter
) -> None:
    prompt = unique_prompt()
    first = client.generate(prompt, seed=5, **QUICK)
    job_id = client.submit(prompt, seed=5, **QUICK)

    with client.watch(job_id) as watch:
        watched = watch.result()
    info = client.get_job(job_id)

    assert submits.count == 1
    assert watched.cached and watched.images[0].data == first.images[0].data
    assert info.result is not None and info.result.cached


def start_stream(stub: pb_grpc.GenerationServiceStub, **fields: Any) -> Any:
    request = pb.StreamGenerateRequest(parameters=pb.GenerationParameters(**fields))
    return stub.StreamGenerate(request, timeout=TIMEOUT_S)


def until_progress(call: Any) -> list[pb.StreamGenerateResponse]:
    """The stream's events up to and including its first progress event."""
    seen = []
    for response in call:
        seen.append(response)
        if response.HasField("progress"):
            return seen
    raise AssertionError("the stream ended before any progress")


def final_result(call: Any) -> pb.GenerationResult:
    for response in call:
        if response.HasField("result"):
            return response.result
    raise AssertionError("the stream ended without a result")


def test_identical_concurrent_requests_run_once_and_all_get_the_result(
    cached_server: ServerThread, submits: SubmitCounter, results: CachingScheduler
) -> None:
    hold = new_hold("single-flight")
    flights_before = results.flights_started
    with cached_server.channel() as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        first = start_stream(stub, prompt=hold.prompt, seed=21, **HELD)
        until_progress(first)  # the run is on the replica now, held after its first step
        # Three more identical requests while it runs, from threads, all at once.
        barrier = threading.Barrier(3)

        def identical() -> Any:
            barrier.wait(timeout=30)
            call = start_stream(stub, prompt=hold.prompt, seed=21, **HELD)
            until_progress(call)  # attached: the run's history replayed
            return call

        with ThreadPoolExecutor(3) as pool:
            attached = [future.result(timeout=TIMEOUT_S) for future in
                        [pool.submit(identical) for _ in range(3)]]  # fmt: skip
        hold.release()
        leader = final_result(first)
        outcomes = [final_result(call) for call in attached]

    assert submits.count == 1
    assert results.flights_started == flights_before + 1
    assert all(outcome.images[0].data == leader.images[0].data for outcome in outcomes)
    assert not leader.cached and not any(outcome.cached for outcome in outcomes)
    assert cached_server.active_jobs() == []


def test_a_follower_sees_the_runs_events_from_the_start(
    cached_server: ServerThread, submits: SubmitCounter
) -> None:
    hold = new_hold("follower")
    with (
        Client(cached_server.address) as client,
        client.stream(hold.prompt, seed=8, **HELD) as leader,
    ):
        next(event for event in leader if isinstance(event, Progress))
        with client.stream(hold.prompt, seed=8, **HELD) as follower:
            first = next(iter(follower))
            replayed = next(event for event in follower if isinstance(event, Progress))
            hold.release()
            events = [first, replayed, *follower]
        leader_result = leader.result()

    assert submits.count == 1
    assert isinstance(events[0], Queued)
    steps = [event.step for event in events if isinstance(event, Progress)]
    assert steps == list(range(1, HELD["steps"] + 1))
    final = events[-1]
    assert isinstance(final, Result)
    assert final.images[0].data == leader_result.images[0].data
    assert final.job_id != leader_result.job_id  # each caller has a job of its own


def test_when_the_first_caller_cancels_the_others_still_get_the_result(
    cached_server: ServerThread, submits: SubmitCounter
) -> None:
    hold = new_hold("handover")
    with cached_server.channel() as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        owner = start_stream(stub, prompt=hold.prompt, seed=31, **HELD)
        owner_job = until_progress(owner)[0].job_id
        follower = start_stream(stub, prompt=hold.prompt, seed=31, **HELD)
        until_progress(follower)  # attached: the run's history replayed
        owner.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            next(owner)
        # The first run is over before the hold is released, so only the handed-over run ends.
        cached_server.wait_job_finished(owner_job)
        hold.release()
        result = final_result(follower)

    assert caught.value.code() == grpc.StatusCode.CANCELLED
    assert submits.count == 2  # handed over: run again for the one still waiting
    assert len(result.images) == 1 and not result.cached
    with Client(cached_server.address) as client:
        alone = client.generate(hold.prompt, seed=31, **HELD)
    assert alone.cached and alone.images[0].data == result.images[0].data
    assert cached_server.active_jobs() == []


def test_a_follower_that_leaves_does_not_stop_the_run(
    cached_server: ServerThread, submits: SubmitCounter
) -> None:
    hold = new_hold("leaver")
    with cached_server.channel() as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        owner = start_stream(stub, prompt=hold.prompt, seed=41, **HELD)
        until_progress(owner)
        follower = start_stream(stub, prompt=hold.prompt, seed=41, **HELD)
        follower_job = until_progress(follower)[0].job_id
        follower.cancel()
        # The run is still held when the follower's job ends: it cannot have finished first.
        cached_server.wait_job_finished(follower_job)
        hold.release()
        result = final_result(owner)

    assert submits.count == 1
    assert len(result.images) == 1
    assert cached_server.active_jobs() == []


def test_a_request_after_the_owner_cancelled_gets_a_run_of_its_own(
    cached_server: ServerThread, submits: SubmitCounter, results: CachingScheduler
) -> None:
    """The owner cancels with nobody else waiting; an identical request that arrives while the
    cancelled run is still ending must not attach to it (and be failed CANCELLED although its
    caller never cancelled): it starts a flight of its own and gets its result."""
    hold = new_hold("after-cancel")
    with cached_server.channel() as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        owner = start_stream(stub, prompt=hold.prompt, seed=51, **HELD)
        owner_job = until_progress(owner)[0].job_id

        async def cancel_then_ask_again() -> tuple[bool, Job]:
            spec = results.get_job(owner_job).spec
            await results.cancel(owner_job)
            # Nothing has yielded to the worker's reply yet: the cancelled run is still on.
            dying = not results.get_job(owner_job).state.finished
            return dying, await results.submit_deterministic(spec)

        dying, newcomer = cached_server.call(cancel_then_ask_again())
        cached_server.wait_job_finished(owner_job)
        hold.release()  # the newcomer's own run is held after its first step too
        finished = cached_server.wait_job_finished(newcomer.id, timeout=TIMEOUT_S)

    assert dying, "the request must arrive while the cancelled run is ending"
    assert finished.state is JobState.SUCCEEDED, finished.state
    assert finished.result is not None and len(finished.result.images) == 1
    assert submits.count == 2  # the cancelled run, and the newcomer's own
    assert cached_server.active_jobs() == []
