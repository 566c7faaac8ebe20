"""Jobs and server status: request building and proto -> typed values, from real messages."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2

from pointillist import (
    CancelledError,
    DeviceKind,
    GenerationParameters,
    JobState,
    NotFoundError,
    PointillistError,
    Priority,
    ReplicaState,
    error_from_status,
)
from pointillist.conversion import (
    event_from_proto,
    generate_request,
    job_from_proto,
    priority_to_proto,
    server_status_from_proto,
    stream_request,
    submit_request,
)
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2, status_pb2

GIB = 2**30


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@pytest.mark.parametrize(
    ("given", "wire"),
    [
        (None, pb.PRIORITY_UNSPECIFIED),
        ("low", pb.PRIORITY_LOW),
        ("HIGH", pb.PRIORITY_HIGH),
        (Priority.NORMAL, pb.PRIORITY_NORMAL),
        (Priority.HIGH, pb.PRIORITY_HIGH),
    ],
)
def test_priority_to_proto(given: Priority | str | None, wire: int) -> None:
    assert priority_to_proto(given) == wire


def test_an_unknown_priority_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="low, normal, high"):
        priority_to_proto("urgent")


def test_requests_carry_the_priority() -> None:
    parameters = pb.GenerationParameters(prompt="a fox")

    assert submit_request(parameters, pb.PRIORITY_HIGH).priority == pb.PRIORITY_HIGH
    assert generate_request(parameters, pb.PRIORITY_LOW).priority == pb.PRIORITY_LOW
    assert stream_request(parameters).priority == pb.PRIORITY_UNSPECIFIED
    assert submit_request(parameters).parameters.prompt == "a fox"


def test_watch_responses_become_the_same_typed_events_as_stream_responses() -> None:
    progress = pb.ProgressEvent(step=3, total_steps=10, steps_per_second=2.5)
    watched = jobs_pb2.WatchJobResponse(job_id="j1", progress=progress)
    streamed = pb.StreamGenerateResponse(job_id="j1", progress=progress)

    assert event_from_proto(watched) == event_from_proto(streamed)


def test_a_succeeded_job() -> None:
    job = jobs_pb2.Job(
        id="j1",
        state=jobs_pb2.JOB_STATE_SUCCEEDED,
        parameters=pb.GenerationParameters(
            model="demo",
            prompt="a fox",
            width=64,
            height=64,
            steps=2,
            guidance_scale=4.5,
            seed=7,
            num_images=1,
            output_format=pb.IMAGE_FORMAT_WEBP,
            quality=80,
        ),
        priority=pb.PRIORITY_HIGH,
        create_time=timestamp(1_700_000_000.0),
        start_time=timestamp(1_700_000_000.5),
        end_time=timestamp(1_700_000_002.0),
        progress=pb.ProgressEvent(step=2, total_steps=2),
        result=pb.GenerationResult(images=[pb.Image(data=b"x", mime_type="image/webp", seed=7)]),
    )

    info = job_from_proto(job)

    assert (info.id, info.state, info.priority) == ("j1", JobState.SUCCEEDED, Priority.HIGH)
    assert info.finished and not info.cancel_requested
    assert info.parameters == GenerationParameters(
        model="demo",
        prompt="a fox",
        negative_prompt="",
        width=64,
        height=64,
        steps=2,
        guidance_scale=4.5,
        seed=7,
        num_images=1,
        output_format="webp",
        quality=80,
        preview_every=0,
        preview_size=0,
    )
    assert info.created_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert info.started_at is not None and info.finished_at is not None
    assert (info.finished_at - info.created_at).total_seconds() == 2.0
    assert info.progress is not None and info.progress.step == 2
    assert info.result is not None and info.result.seeds == [7]
    assert info.result.job_id == "j1"
    assert info.error is None
    assert info.parameters.as_kwargs()["output_format"] == "webp"


def test_a_queued_job_has_no_times_progress_or_outcome() -> None:
    info = job_from_proto(
        jobs_pb2.Job(id="j2", state=jobs_pb2.JOB_STATE_QUEUED, create_time=timestamp(1.0))
    )

    assert info.state is JobState.QUEUED and not info.finished
    assert (info.started_at, info.finished_at, info.progress) == (None, None, None)
    assert (info.result, info.error) == (None, None)
    assert info.priority is Priority.NORMAL  # unspecified is the server default
    assert info.parameters.seed is None and info.parameters.guidance_scale is None


def test_a_cancelled_job_carries_the_error_its_watchers_get() -> None:
    resource = any_pb2.Any()
    resource.Pack(error_details_pb2.ResourceInfo(resource_type="job", resource_name="j3"))
    job = jobs_pb2.Job(
        id="j3",
        state=jobs_pb2.JOB_STATE_CANCELLED,
        cancel_requested=True,
        error=rpc_status_pb2.Status(
            code=code_pb2.CANCELLED, message="the job was cancelled", details=[resource]
        ),
    )

    info = job_from_proto(job)

    assert info.state is JobState.CANCELLED and info.cancel_requested
    assert isinstance(info.error, CancelledError)
    assert info.error.code == grpc.StatusCode.CANCELLED
    assert info.error.message == "the job was cancelled"
    assert info.error.detail(error_details_pb2.ResourceInfo) is not None
    assert info.result is None


def test_error_from_status_picks_the_class_by_code() -> None:
    not_found = error_from_status(rpc_status_pb2.Status(code=code_pb2.NOT_FOUND))
    assert isinstance(not_found, NotFoundError) and not_found.message == "NOT_FOUND"
    unknown = error_from_status(rpc_status_pb2.Status(code=999, message="?"))
    assert type(unknown) is PointillistError and unknown.code == grpc.StatusCode.UNKNOWN


def test_server_status() -> None:
    response = status_pb2.GetServerStatusResponse(
        devices=[
            status_pb2.DeviceStatus(
                id="GPU-1",
                kind=pb.DEVICE_KIND_CUDA,
                name="NVIDIA H100",
                total_bytes=80 * GIB,
                free_bytes=50 * GIB,
                used_bytes=30 * GIB,
                compute_capability=status_pb2.ComputeCapability(major=9, minor=0),
                utilization_percent=55.0,
                processes=[status_pb2.DeviceProcess(pid=10, used_bytes=GIB)],
            ),
            status_pb2.DeviceStatus(id="cpu", kind=pb.DEVICE_KIND_CPU),
        ],
        replicas=[
            status_pb2.ReplicaStatus(
                id="r0",
                model="sd35",
                device_id="GPU-1",
                state=status_pb2.REPLICA_STATE_BUSY,
                pid=10,
                memory_bytes=GIB,
                running_jobs=1,
            ),
            status_pb2.ReplicaStatus(id="r1", model="sd35", state=99),  # type: ignore[arg-type]
        ],
        models=[
            status_pb2.ModelQueueStatus(
                model="sd35",
                queued_jobs=4,
                running_jobs=1,
                replicas=2,
                footprint_bytes=GIB,
                footprint_measured=True,
            ),
            status_pb2.ModelQueueStatus(model="other"),
        ],
        draining=True,
    )

    status = server_status_from_proto(response)

    gpu, cpu = status.devices
    assert gpu.kind is DeviceKind.CUDA and gpu.compute_capability == (9, 0)
    assert gpu.utilization_percent == 55.0 and gpu.processes[0].used_bytes == GIB
    assert cpu.compute_capability is None and cpu.utilization_percent is None
    busy, unknown = status.replicas
    assert busy.state is ReplicaState.BUSY and busy.pid == 10 and busy.running_jobs == 1
    assert unknown.state is ReplicaState.UNSPECIFIED and unknown.pid is None
    sd35, other = status.models
    assert (sd35.queued_jobs, sd35.replicas, sd35.footprint_bytes) == (4, 2, GIB)
    assert other.footprint_bytes is None and not other.footprint_measured
    assert status.draining
