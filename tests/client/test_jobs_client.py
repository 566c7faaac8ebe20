"""Client and AsyncClient jobs and status against the real demo server."""

from __future__ import annotations

from typing import Any

import pytest

from pointillist import (
    AsyncClient,
    CancelledError,
    Client,
    InvalidArgumentError,
    JobState,
    NotFoundError,
    Priority,
    Progress,
    Queued,
    ReplicaState,
    Result,
    Started,
)
from tests.holds import new_hold

# A job held after its first step until released or cancelled (tests/holds.py): running for as
# long as a test needs, however fast the machine is. The prompt comes from new_hold.
HELD: dict[str, Any] = {"width": 64, "height": 64, "steps": 4, "seed": 7}


def test_submit_then_watch_yields_the_typed_events_and_result(demo_server):
    with Client(demo_server.address, timeout=120) as client:
        job_id = client.submit("a fox", width=64, height=64, steps=3, seed=4, preview_every=3)
        with client.watch(job_id) as watch:
            assert watch.job_id == job_id  # known before the first event
            events = list(watch)
        again = client.watch(job_id).result()

    assert isinstance(events[0], Queued) and isinstance(events[1], Started)
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    result = events[-1]
    assert isinstance(result, Result) and result.job_id == job_id and result.seeds == [4]
    assert again == result


def test_get_job_returns_the_record_with_resolved_parameters(demo_server):
    with Client(demo_server.address, timeout=120) as client:
        job_id = client.submit("a fox", width=64, height=64, steps=2, seed=9, priority="high")
        client.watch(job_id).result()
        info = client.get_job(job_id)

    assert info.id == job_id and info.state is JobState.SUCCEEDED and info.finished
    assert info.parameters.model == "demo" and info.parameters.seed == 9
    assert info.parameters.guidance_scale is not None  # the model's default, resolved
    assert info.created_at <= info.started_at <= info.finished_at  # type: ignore[operator]
    assert info.result is not None and info.result.seeds == [9]
    assert info.error is None


def test_leaving_a_watch_early_does_not_cancel_the_job(demo_server):
    with Client(demo_server.address, timeout=120) as client:
        hold = new_hold("leave-watch")
        job_id = client.submit(hold.prompt, width=64, height=64, steps=4, seed=1)
        with client.watch(job_id) as watch:
            for event in watch:
                if isinstance(event, Progress):  # held there: the job outlives the watch
                    break
        assert watch.cancelled
        still = client.get_job(job_id)
        assert still.state is JobState.RUNNING and not still.cancel_requested

        hold.release()
        result = client.watch(job_id).result()
        info = client.get_job(job_id)

    assert result.seeds == [1]
    assert info.state is JobState.SUCCEEDED and not info.cancel_requested


def test_cancel_job_cancels_and_the_watch_raises_cancelled(demo_server):
    with Client(demo_server.address, timeout=120) as client:
        job_id = client.submit(new_hold("cancel").prompt, **HELD)
        with client.watch(job_id) as watch:
            next(event for event in watch if isinstance(event, Progress))
            info = client.cancel_job(job_id)
            with pytest.raises(CancelledError):
                list(watch)
        again = client.cancel_job(job_id)

    assert info.state is JobState.CANCELLED and info.cancel_requested
    assert isinstance(info.error, CancelledError)
    assert again.state is JobState.CANCELLED
    assert demo_server.active_jobs() == []


def test_unknown_jobs_raise_not_found(demo_server):
    with Client(demo_server.address, timeout=30) as client:
        with pytest.raises(NotFoundError, match="nope"):
            client.get_job("nope")
        with pytest.raises(NotFoundError):
            client.cancel_job("nope")
        with pytest.raises(NotFoundError):
            list(client.watch("nope"))


def test_submit_validates_like_generate(demo_server):
    with Client(demo_server.address, timeout=30) as client:
        with pytest.raises(InvalidArgumentError) as caught:
            client.submit("", width=100)
        with pytest.raises(ValueError, match="priority"):
            client.submit("a fox", priority="urgent")

    assert {v.field for v in caught.value.field_violations} == {
        "parameters.prompt",
        "parameters.width",
    }


def test_generate_and_stream_take_a_priority(demo_server):
    with Client(demo_server.address, timeout=120) as client:
        result = client.generate("a fox", width=64, height=64, steps=2, priority=Priority.LOW)
        with client.stream("a fox", width=64, height=64, steps=2, priority="high") as stream:
            streamed = stream.result()

    assert len(result.images) == len(streamed.images) == 1


def test_server_status_lists_the_demo_replica_and_model(demo_server):
    with Client(demo_server.address, timeout=30) as client:
        status = client.server_status()

    assert not status.draining
    (model,) = status.models
    assert model.model == "demo" and model.replicas >= 1 and model.footprint_measured
    replica = next(replica for replica in status.replicas if replica.model == "demo")
    assert replica.state is ReplicaState.READY and replica.pid is not None


async def test_async_client_submits_watches_gets_cancels_and_reports_status(demo_server):
    async with AsyncClient(demo_server.address, timeout=120) as client:
        job_id = await client.submit("async", width=64, height=64, steps=3, seed=2)
        events = [event async for event in client.watch(job_id)]
        info = await client.get_job(job_id)

        long_id = await client.submit(new_hold("async-cancel").prompt, **HELD)
        async with client.watch(long_id) as watch:
            async for event in watch:
                if isinstance(event, Started):
                    break
        cancelled = await client.cancel_job(long_id)
        with pytest.raises(CancelledError):
            await client.watch(long_id).result()
        with pytest.raises(NotFoundError):
            await client.get_job("nope")
        status = await client.server_status()

    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert isinstance(events[-1], Result) and events[-1].seeds == [2]
    assert info.state is JobState.SUCCEEDED and info.result == events[-1]
    assert cancelled.state is JobState.CANCELLED
    assert [model.model for model in status.models] == ["demo"]
    assert demo_server.active_jobs() == []
