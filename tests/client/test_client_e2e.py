"""Client and AsyncClient against the real demo server: typed events, results, typed errors."""

from __future__ import annotations

import pytest

from pointillist import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    NotFoundError,
    Preview,
    Progress,
    Queued,
    Result,
    Started,
)
from scheduler.job import JobState
from tests.holds import new_hold


def test_generate_returns_a_result_with_the_asked_seed(demo_server):
    with Client(demo_server.address) as client:
        result = client.generate("a cat", width=64, height=64, steps=2, seed=21)

    assert [image.seed for image in result.images] == [21]
    assert result.images[0].mime_type == "image/png"
    assert result.reproducibility.model_id == "demo"
    assert result.timings.total_s > 0


def test_stream_yields_typed_events_in_order(demo_server, tmp_path):
    with (
        Client(demo_server.address) as client,
        client.stream("a fox", width=64, height=64, steps=4, seed=1, preview_every=2) as stream,
    ):
        events = list(stream)

    assert isinstance(events[0], Queued) and isinstance(events[1], Started)
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]
    assert [e.step for e in events if isinstance(e, Preview)] == [2, 4]
    result = events[-1]
    assert isinstance(result, Result)
    saved = result.images[0].save(tmp_path / "fox.png")
    assert saved.read_bytes() == result.images[0].data


def test_leaving_a_stream_early_cancels_the_job(demo_server):
    # Held after step 1 (tests/holds.py): still running when the stream is left, on any machine.
    hold = new_hold("leave-stream")
    with Client(demo_server.address) as client:
        with client.stream(hold.prompt, width=64, height=64, steps=4, seed=3) as stream:
            for event in stream:
                if isinstance(event, Progress):
                    break
        job_id = stream.job_id

    assert job_id is not None
    job = demo_server.wait_job_finished(job_id)
    assert job.state is JobState.CANCELLED
    assert demo_server.active_jobs() == []


def test_invalid_argument_carries_every_field_violation(demo_server):
    with Client(demo_server.address) as client, pytest.raises(InvalidArgumentError) as caught:
        client.generate("", width=100, height=64, steps=2)

    fields = {violation.field for violation in caught.value.field_violations}
    assert fields == {"parameters.prompt", "parameters.width"}


def test_unknown_model_raises_not_found(demo_server):
    with Client(demo_server.address) as client, pytest.raises(NotFoundError, match="nope"):
        client.generate("a cat", model="nope", width=64, height=64, steps=2)


def test_models_lists_the_demo_model(demo_server):
    with Client(demo_server.address) as client:
        listing = client.models()

    assert listing.default_model == "demo"
    assert [model.id for model in listing.models] == ["demo"]
    assert listing.models[0].ready


async def test_async_client_generates_streams_and_raises_typed_errors(demo_server):
    async with AsyncClient(demo_server.address) as client:
        result = await client.generate("async", width=64, height=64, steps=2, seed=5)
        events = [event async for event in client.stream("async", width=64, height=64, steps=3)]
        with pytest.raises(InvalidArgumentError):
            await client.generate("async", steps=1000)

    assert result.images[0].seed == 5
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert isinstance(events[-1], Result)
