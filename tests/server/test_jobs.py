"""JobService end to end: submit, watch (live, late, several at once), get, cancel, retention."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2 as jobs_pb
from pointillist.v1 import jobs_pb2_grpc as jobs_grpc
from scheduler.job import JobState
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.holds import Hold, new_hold

HELD_STEPS = 4
WATCH_TIMEOUT_S = 120

Response = jobs_pb.WatchJobResponse


@pytest.fixture
def jobs(channel: grpc.Channel) -> jobs_grpc.JobServiceStub:
    return jobs_grpc.JobServiceStub(channel)


def params(**fields: object) -> pb.GenerationParameters:
    values: dict[str, object] = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64}
    values.update(fields)
    return pb.GenerationParameters(**values)  # type: ignore[arg-type]


def submit(
    jobs: jobs_grpc.JobServiceStub,
    priority: pb.Priority = pb.PRIORITY_UNSPECIFIED,
    **fields: object,
) -> str:
    request = jobs_pb.SubmitJobRequest(parameters=params(**fields), priority=priority)
    job_id: str = jobs.SubmitJob(request, timeout=10).job_id
    return job_id


def watch(jobs: jobs_grpc.JobServiceStub, job_id: str) -> Iterator[Response]:
    call: Iterator[Response] = jobs.WatchJob(
        jobs_pb.WatchJobRequest(job_id=job_id), timeout=WATCH_TIMEOUT_S
    )
    return call


def watch_until(
    jobs: jobs_grpc.JobServiceStub, job_id: str, seen: Callable[[Response], bool]
) -> tuple[Iterator[Response], list[Response]]:
    """Watch the job until an event satisfies ``seen``; returns the open call and the events."""
    call = watch(jobs, job_id)
    events = []
    for event in call:
        events.append(event)
        if seen(event):
            return call, events
    raise AssertionError(f"the watch ended without the awaited event: {kinds(events)}")


def get(jobs: jobs_grpc.JobServiceStub, job_id: str) -> jobs_pb.Job:
    job: jobs_pb.Job = jobs.GetJob(jobs_pb.GetJobRequest(job_id=job_id), timeout=10).job
    return job


def cancel(jobs: jobs_grpc.JobServiceStub, job_id: str) -> jobs_pb.Job:
    job: jobs_pb.Job = jobs.CancelJob(jobs_pb.CancelJobRequest(job_id=job_id), timeout=30).job
    return job


def started(event: Response) -> bool:
    return event.HasField("started")


def at_step(step: int) -> Callable[[Response], bool]:
    return lambda event: event.HasField("progress") and event.progress.step == step


def kinds(events: list[Response] | list[pb.StreamGenerateResponse]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


def expected_kinds(steps: int, preview_every: int = 0) -> list[str]:
    sequence = ["queued", "started"]
    for step in range(1, steps + 1):
        sequence.append("progress")
        if preview_every and (step % preview_every == 0 or step == steps):
            sequence.append("preview")
    return [*sequence, "result"]


def collect(call: Iterator[Response], events: list[Response]) -> None:
    """Append the call's events to ``events`` as they come (kept when the call then fails)."""
    for event in call:
        events.append(event)


def held(hold: Hold) -> dict[str, Any]:
    """A job held after its first step until released or cancelled (tests/holds.py): running
    for as long as the test needs, however fast the machine is."""
    return {"prompt": hold.prompt, "width": 64, "height": 64, "steps": HELD_STEPS, "seed": 7}


def error_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# -- submit and watch ---------------------------------------------------------------------------


def test_submit_returns_the_id_before_the_job_runs_and_the_job_completes(jobs, demo_server):
    hold = new_hold("submit")
    job_id = submit(jobs, **{**held(hold), "seed": 4})

    assert get(jobs, job_id).state in (jobs_pb.JOB_STATE_QUEUED, jobs_pb.JOB_STATE_RUNNING)
    hold.release()
    assert demo_server.wait_job_finished(job_id).state is JobState.SUCCEEDED
    assert get(jobs, job_id).state == jobs_pb.JOB_STATE_SUCCEEDED


def test_watch_sends_the_same_events_as_stream_generate(jobs, stub: pb_grpc.GenerationServiceStub):
    preview = pb.PreviewOptions(every_n_steps=2, max_size=32)
    job_id = submit(jobs, steps=5, seed=11, preview=preview)
    watched = list(watch(jobs, job_id))
    streamed = list(
        stub.StreamGenerate(
            pb.StreamGenerateRequest(parameters=params(steps=5, seed=11, preview=preview)),
            timeout=WATCH_TIMEOUT_S,
        )
    )

    assert kinds(watched) == kinds(streamed) == expected_kinds(5, preview_every=2)
    assert {event.job_id for event in watched} == {job_id}
    assert [e.progress.step for e in watched if e.HasField("progress")] == [1, 2, 3, 4, 5]
    assert [e.preview.step for e in watched if e.HasField("preview")] == [2, 4, 5]
    assert watched[-1].result.images[0].data == streamed[-1].result.images[0].data
    assert watched[-1].result.reproducibility.parameters.seed == 11


def test_two_watchers_at_once_see_identical_full_sequences(jobs):
    job_id = submit(jobs, steps=6, seed=2, preview=pb.PreviewOptions(every_n_steps=3))
    first, second = watch(jobs, job_id), watch(jobs, job_id)

    pairs = list(zip(first, second, strict=False))  # read alternately, event by event
    assert next(first, None) is None and next(second, None) is None

    assert [a for a, _ in pairs] == [b for _, b in pairs]
    assert kinds([a for a, _ in pairs]) == expected_kinds(6, preview_every=3)


def test_a_late_watcher_sees_the_whole_history_after_completion(jobs, demo_server):
    job_id = submit(jobs, steps=4, seed=3)
    assert demo_server.wait_job_finished(job_id).state is JobState.SUCCEEDED

    events = list(watch(jobs, job_id))

    assert kinds(events) == expected_kinds(4)
    assert events[-1].result.images[0].seed == 3


def test_a_finished_job_can_be_watched_again_with_the_same_events_less_its_previews(jobs):
    job_id = submit(jobs, steps=3, seed=8, preview=pb.PreviewOptions(every_n_steps=1))

    live = list(watch(jobs, job_id))
    again = list(watch(jobs, job_id))

    assert kinds(live) == expected_kinds(3, preview_every=1)
    # A finished job drops its previews once nobody watches (job_history_max_mib, issue 14).
    assert again == [event for event in live if event.WhichOneof("event") != "preview"]


def test_a_watcher_that_reconnects_mid_job_gets_the_history_then_the_rest(jobs):
    hold = new_hold("reconnect")
    job_id = submit(jobs, **{**held(hold), "seed": 6})
    call, before = watch_until(jobs, job_id, at_step(1))  # held there
    call.cancel()  # type: ignore[attr-defined]

    again = watch(jobs, job_id)
    history = [next(again) for _ in before]
    assert get(jobs, job_id).state == jobs_pb.JOB_STATE_RUNNING  # reconnected mid-job
    hold.release()
    after = history + list(again)

    assert history == before
    assert kinds(after) == expected_kinds(HELD_STEPS)


def test_leaving_a_watch_early_does_not_cancel_the_job(jobs, demo_server):
    hold = new_hold("leave-watch")
    job_id = submit(jobs, **{**held(hold), "seed": 5})
    call, _ = watch_until(jobs, job_id, at_step(1))  # held there: the job outlives the watch

    call.cancel()  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as caught:
        next(call)

    assert caught.value.code() == grpc.StatusCode.CANCELLED  # the watch ended, the job did not
    still = get(jobs, job_id)
    assert still.state == jobs_pb.JOB_STATE_RUNNING and not still.cancel_requested
    hold.release()
    job = demo_server.wait_job_finished(job_id)
    assert job.state is JobState.SUCCEEDED and not job.cancel_requested
    assert get(jobs, job_id).result.images[0].seed == 5


# -- get ----------------------------------------------------------------------------------------


def test_get_job_reports_queued_running_then_the_outcome(jobs, demo_server):
    long_id = submit(jobs, **held(new_hold("get")))
    long_watch, _ = watch_until(jobs, long_id, started)
    short_id = submit(jobs, steps=2, width=64, height=64, seed=5, num_images=2)

    queued = get(jobs, short_id)
    running = get(jobs, long_id)
    cancelled = cancel(jobs, long_id)
    list(watch(jobs, short_id))
    done = get(jobs, short_id)

    assert queued.state == jobs_pb.JOB_STATE_QUEUED
    assert not queued.HasField("start_time") and not queued.HasField("end_time")
    assert queued.WhichOneof("outcome") is None
    assert running.state == jobs_pb.JOB_STATE_RUNNING
    assert running.HasField("start_time") and not running.HasField("end_time")

    assert done.id == short_id and done.state == jobs_pb.JOB_STATE_SUCCEEDED
    assert done.priority == pb.PRIORITY_NORMAL
    assert done.parameters.model == "demo"  # resolved: the request named no model
    assert (done.parameters.steps, done.parameters.seed, done.parameters.num_images) == (2, 5, 2)
    assert done.parameters.HasField("guidance_scale")
    times = [done.create_time, done.start_time, done.end_time]
    nanos = [stamp.ToNanoseconds() for stamp in times]
    assert nanos == sorted(nanos) and nanos[0] > 0
    assert done.progress.step == done.progress.total_steps == 2
    assert [image.seed for image in done.result.images] == [5, 6]

    assert cancelled.state == jobs_pb.JOB_STATE_CANCELLED
    assert cancelled.error.code == code_pb2.CANCELLED and cancelled.error.message
    assert cancelled.HasField("end_time") and not cancelled.HasField("result")
    with pytest.raises(grpc.RpcError) as caught:
        list(long_watch)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    assert demo_server.active_jobs() == []


def test_jobs_started_by_stream_generate_are_jobs_too(jobs, stub):
    events = list(
        stub.StreamGenerate(
            pb.StreamGenerateRequest(parameters=params(steps=2, seed=9)), timeout=60
        )
    )

    job = get(jobs, events[0].job_id)

    assert job.state == jobs_pb.JOB_STATE_SUCCEEDED
    # Kept though its caller got it: a later request may take it as an init image.
    assert job.result == events[-1].result


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_a_running_job_stops_it_and_ends_its_watchers_with_cancelled(jobs, demo_server):
    job_id = submit(jobs, **held(new_hold("cancel-running")))
    call, _ = watch_until(jobs, job_id, at_step(1))  # held there: still running

    response = cancel(jobs, job_id)

    assert response.state == jobs_pb.JOB_STATE_CANCELLED and response.cancel_requested
    assert response.progress.step < HELD_STEPS
    error = error_of(lambda: list(call))
    assert error.code() == grpc.StatusCode.CANCELLED
    rewatch = error_of(lambda: list(watch(jobs, job_id)))
    assert rewatch.code() == grpc.StatusCode.CANCELLED
    job = demo_server.wait_job_finished(job_id)
    assert job.state is JobState.CANCELLED
    assert job.steps_after_cancel is not None and job.steps_after_cancel <= 1
    assert demo_server.active_jobs() == []


def test_cancel_a_queued_job_takes_it_out_of_the_queue_before_it_starts(jobs, demo_server):
    long_id = submit(jobs, **held(new_hold("hog")))
    long_watch, _ = watch_until(jobs, long_id, started)
    queued_id = submit(jobs, steps=2, seed=1)

    response = cancel(jobs, queued_id)
    events: list[Response] = []
    error = error_of(lambda: collect(watch(jobs, queued_id), events))
    cancel(jobs, long_id)
    long_watch.cancel()  # type: ignore[attr-defined]

    assert response.state == jobs_pb.JOB_STATE_CANCELLED
    assert not response.HasField("start_time")
    assert kinds(events) == ["queued"] and error.code() == grpc.StatusCode.CANCELLED
    assert demo_server.wait_job_finished(queued_id).started_at is None
    assert demo_server.wait_job_finished(long_id).state is JobState.CANCELLED
    assert demo_server.active_jobs() == []


def test_cancel_a_finished_job_returns_it_unchanged(jobs, demo_server):
    job_id = submit(jobs, steps=2, seed=1)
    list(watch(jobs, job_id))
    before = get(jobs, job_id)

    after = cancel(jobs, job_id)

    assert after == before and after.state == jobs_pb.JOB_STATE_SUCCEEDED
    assert demo_server.active_jobs() == []


# -- errors -------------------------------------------------------------------------------------


def resource_info(error: grpc.RpcError) -> error_details_pb2.ResourceInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ResourceInfo()
    assert status.details[0].Unpack(info)
    return info


def assert_unknown_everywhere(jobs: jobs_grpc.JobServiceStub, job_id: str) -> None:
    for call in (
        lambda: get(jobs, job_id),
        lambda: list(watch(jobs, job_id)),
        lambda: cancel(jobs, job_id),
    ):
        error = error_of(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        info = resource_info(error)
        assert (info.resource_type, info.resource_name) == ("job", job_id)


def test_unknown_job_ids_are_not_found(jobs):
    assert_unknown_everywhere(jobs, "no-such-job")


@pytest.fixture(scope="module")
def forgetful_server() -> Iterator[ServerThread]:
    """A server that forgets a job as soon as it finishes (retention 0)."""
    server = ServerThread(demo_settings(job_retention_s=0.0)).start()
    yield server
    server.stop()


def test_a_forgotten_job_is_not_found(forgetful_server):
    with forgetful_server.channel() as channel:
        events = list(
            pb_grpc.GenerationServiceStub(channel).StreamGenerate(
                pb.StreamGenerateRequest(parameters=params(steps=2)), timeout=60
            )
        )
        assert events[-1].HasField("result")

        assert_unknown_everywhere(jobs_grpc.JobServiceStub(channel), events[0].job_id)
    assert forgetful_server.active_jobs() == []


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    (detail,) = status.details
    assert detail.Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


@pytest.mark.parametrize(
    ("fields", "bad_field", "words"),
    [
        ({"prompt": ""}, "parameters.prompt", "must not be empty"),
        ({"width": 100}, "parameters.width", "multiple of 16"),
        ({"steps": 101}, "parameters.steps", "between 1 and 100"),
        ({"priority": 9}, "priority", "unknown priority 9"),
    ],
)
def test_submit_validates_like_stream_generate_and_names_the_field(
    jobs, demo_server, fields, bad_field, words
):
    error = error_of(lambda: submit(jobs, **fields))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in violations(error)[bad_field]
    assert demo_server.active_jobs() == []


def test_submit_reports_every_bad_field_at_once(jobs):
    error = error_of(lambda: submit(jobs, prompt="", width=100, num_images=9))

    assert set(violations(error)) == {
        "parameters.prompt",
        "parameters.width",
        "parameters.num_images",
    }


def test_submit_for_an_unknown_model_is_not_found(jobs):
    error = error_of(lambda: submit(jobs, model="sd35-nonexistent"))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "sd35-nonexistent" in (error.details() or "")


def test_stream_generate_rejects_an_unknown_priority(stub):
    request = pb.StreamGenerateRequest(parameters=params(steps=2), priority=7)  # type: ignore[arg-type]

    error = error_of(lambda: list(stub.StreamGenerate(request, timeout=30)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "priority" in violations(error)


# -- priority -----------------------------------------------------------------------------------


def test_a_high_priority_job_starts_before_a_low_one_submitted_earlier(jobs, demo_server):
    long_id = submit(jobs, **held(new_hold("hog")))
    long_watch, _ = watch_until(jobs, long_id, started)
    # Different step counts: the two can never share one batch, so one must start first.
    low_id = submit(jobs, priority=pb.PRIORITY_LOW, steps=2, seed=1)
    high_id = submit(jobs, priority=pb.PRIORITY_HIGH, steps=3, seed=2)

    cancel(jobs, long_id)
    long_watch.cancel()  # type: ignore[attr-defined]
    low, high = list(watch(jobs, low_id)), list(watch(jobs, high_id))
    low_job, high_job = get(jobs, low_id), get(jobs, high_id)
    assert demo_server.active_jobs() == []

    assert low[-1].HasField("result") and high[-1].HasField("result")
    assert high_job.start_time.ToNanoseconds() < low_job.start_time.ToNanoseconds()
    assert (low_job.priority, high_job.priority) == (pb.PRIORITY_LOW, pb.PRIORITY_HIGH)
