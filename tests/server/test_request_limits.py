"""Bounds checked before anything is queued, message size limits, malformed bodies, and the
per-caller limit on queued jobs, against the shared demo server."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc
from tests.holds import new_hold
from tests.server.test_validation_errors import call_with, violations_of

GENERATE = "/pointillist.v1.GenerationService/Generate"


def test_a_seed_whose_last_image_overflows_64_bits_is_refused(stub):
    error = call_with(stub, seed=2**64 - 1, num_images=2)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seed + i" in violations_of(error)["parameters.seed"]


def test_the_per_request_budget_of_pixels_steps_and_images_is_enforced(stub):
    # Each field is within its own bound; together they are twice the demo model's budget.
    error = call_with(stub, width=512, height=512, steps=100, num_images=4)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    description = violations_of(error)["parameters"]
    assert "104,857,600" in description and "at most 52,428,800" in description


def test_the_budget_is_not_repeated_when_a_size_field_is_already_wrong(stub):
    error = call_with(stub, width=4096, steps=100, num_images=4)

    assert set(violations_of(error)) == {"parameters.width"}


def test_a_huge_model_id_is_refused_without_being_echoed(stub):
    error = call_with(stub, model="m" * 10_000)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.model" in violations_of(error)
    assert "m" * 200 not in (error.details() or "")


def test_list_models_reports_the_budget(stub):
    (model,) = stub.ListModels(pb.ListModelsRequest(), timeout=10).models

    assert model.limits.max_pixel_steps == 512 * 512 * 100 * 2


def test_a_request_over_the_message_size_limit_is_refused_cleanly(demo_server, channel):
    limit = demo_server.settings.request_limit()
    request = pb.GenerateRequest(parameters=pb.GenerationParameters(prompt="x" * (limit + 1)))
    with pytest.raises(grpc.RpcError) as caught:
        pb_grpc.GenerationServiceStub(channel).Generate(request, timeout=30)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")
    # The server is unharmed: the same channel still works.
    assert pb_grpc.GenerationServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)


def test_a_body_that_is_not_protobuf_is_invalid_argument_not_unknown(channel):
    raw = channel.unary_unary(GENERATE)  # no serializers: bytes in, bytes out
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff\xff", timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pointillist.v1.GenerateRequest" in violations_of(caught.value)["request"]


def test_one_caller_may_queue_only_so_many_jobs_and_gets_a_retry_delay(demo_server, stub):
    limit = demo_server.scheduler.settings.max_queued_per_caller
    # Held after its first step (tests/holds.py): the replica stays busy, so the small jobs stay
    # queued however fast the machine is.
    blocker = stub.StreamGenerate(
        pb.StreamGenerateRequest(
            parameters=pb.GenerationParameters(
                prompt=new_hold("block").prompt, width=64, height=64, steps=4
            )
        ),
        timeout=120,
    )
    events = iter(blocker)
    while not next(events).HasField("started"):
        pass
    jobs = jobs_pb2_grpc.JobServiceStub(stub_channel := demo_server.channel())
    small = pb.GenerationParameters(prompt="queued", width=64, height=64, steps=2)
    accepted = [
        jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=small), timeout=10).job_id
        for _ in range(limit)
    ]
    try:
        with pytest.raises(grpc.RpcError) as caught:
            jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=small), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(caught.value)
        assert status is not None
        retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
        assert status.details[0].Unpack(retry) and retry.retry_delay.ToNanoseconds() > 0
        assert status.details[1].Unpack(quota)
        assert f"at most {limit} queued jobs per caller" in quota.violations[0].description
        # Without API keys a caller is its IP (server/caller_identity.py): another connection
        # from the same address is held back too. (A local subchannel pool: channels to one
        # target otherwise share their connection.)
        with grpc.insecure_channel(
            demo_server.address, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as other:
            other_jobs = jobs_pb2_grpc.JobServiceStub(other)
            with pytest.raises(grpc.RpcError) as again:
                other_jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=small), timeout=10)
            assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # A place freed is a place taken again.
            jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=accepted.pop()), timeout=30)
            accepted.append(
                other_jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=small), timeout=10).job_id
            )
    finally:
        blocker.cancel()
        for job_id in accepted:
            jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=30)
        stub_channel.close()
