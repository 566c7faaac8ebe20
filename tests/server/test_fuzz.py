"""Fuzzing a live server: random and malformed requests, and random bytes as the message body.
Only defined status codes come back (never UNKNOWN or INTERNAL), and the server stays healthy."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc

FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEFINED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
UINT32 = st.integers(0, 2**32 - 1)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=2100)

parameters = st.builds(
    pb.GenerationParameters,
    model=st.one_of(st.just(""), st.just("demo"), st.text(max_size=300)),
    prompt=TEXT,
    negative_prompt=TEXT,
    width=st.one_of(UINT32, st.sampled_from([0, 64, 100, 512, 528])),
    height=st.one_of(UINT32, st.sampled_from([0, 64, 256, 4096])),
    steps=st.one_of(UINT32, st.integers(0, 120)),
    guidance_scale=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    num_images=st.one_of(UINT32, st.integers(0, 6)),
    output_format=st.integers(0, 2**31 - 1),
    quality=st.one_of(UINT32, st.integers(0, 120)),
    preview=st.builds(pb.PreviewOptions, every_n_steps=UINT32, max_size=UINT32),
)


def assert_defined(error: grpc.RpcError, allowed: set[grpc.StatusCode] = DEFINED) -> None:
    assert error.code() in allowed, (error.code(), error.details())
    assert "Traceback" not in (error.details() or "")
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        status = rpc_status.from_call(error)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad) and bad.field_violations


@FUZZ
@given(params=parameters, priority=st.integers(0, 2**31 - 1))
def test_random_requests_get_only_defined_statuses(channel, params, priority):
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    request = jobs_pb2.SubmitJobRequest(parameters=params, priority=priority)
    try:
        job_id = jobs.SubmitJob(request, timeout=30).job_id
    except grpc.RpcError as error:
        assert_defined(error)
        return
    jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=30)  # a valid one: stop it


RAW_METHODS = {
    "/pointillist.v1.JobService/SubmitJob": "unary",
    "/pointillist.v1.JobService/GetJob": "unary",
    "/pointillist.v1.JobService/CancelJob": "unary",
    "/pointillist.v1.GenerationService/Generate": "unary",
    "/pointillist.v1.GenerationService/ListModels": "unary",
    "/pointillist.v1.GenerationService/StreamGenerate": "stream",
    "/pointillist.v1.JobService/WatchJob": "stream",
}


@FUZZ
@given(method=st.sampled_from(sorted(RAW_METHODS)), body=st.binary(max_size=4096))
def test_random_bytes_as_the_body_get_only_defined_statuses(channel, method, body):
    # A body that happens to parse may start a real job: Generate's deadline and the stream's
    # cancel after its first message end it (the job is cancelled with its RPC).
    allowed = DEFINED | {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
    try:
        if RAW_METHODS[method] == "unary":
            channel.unary_unary(method)(body, timeout=3)
        else:
            call = channel.unary_stream(method)(body, timeout=10)
            for _ in call:
                call.cancel()
    except grpc.RpcError as error:
        assert_defined(error, allowed)


def test_the_server_is_healthy_after_the_fuzzing(channel):
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    answer = pb_grpc.GenerationServiceStub(channel).Generate(
        pb.GenerateRequest(
            parameters=pb.GenerationParameters(prompt="still fine", width=64, height=64, steps=2)
        ),
        timeout=60,
    )

    assert status == health_pb2.HealthCheckResponse.SERVING
    assert len(answer.result.images) == 1
