"""The one error map: each domain error becomes its gRPC status with the right details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from scheduler.errors import (
    JobCancelledError,
    JobDeadlineError,
    JobFailedError,
    JobOutOfMemoryError,
    NotServingError,
    QueueFullError,
    ReplicaCrashedError,
    UnknownJobError,
    UnknownModelError,
)
from server.errors import retry_pushback_ms, rich_status
from server.validation import FieldViolation, InvalidRequestError


def detail(status, kind):
    for packed in status.details:
        message = kind()
        if packed.Unpack(message):
            return message
    raise AssertionError(f"no {kind.__name__} in the status details")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            InvalidRequestError([FieldViolation("parameters.width", "bad")]),
            code_pb2.INVALID_ARGUMENT,
        ),
        (UnknownModelError("x", ["demo"]), code_pb2.NOT_FOUND),
        (UnknownJobError("j"), code_pb2.NOT_FOUND),
        (QueueFullError("demo", 4, 2.5), code_pb2.RESOURCE_EXHAUSTED),
        (NotServingError("draining"), code_pb2.UNAVAILABLE),
        (JobCancelledError("cancelled"), code_pb2.CANCELLED),
        (JobDeadlineError("late"), code_pb2.DEADLINE_EXCEEDED),
        (ReplicaCrashedError("crashed"), code_pb2.UNAVAILABLE),
        (JobOutOfMemoryError("oom"), code_pb2.RESOURCE_EXHAUSTED),
        (JobFailedError("raised"), code_pb2.INTERNAL),
    ],
)
def test_each_domain_error_has_its_status_code(error, code):
    assert rich_status(error).code == code


def test_a_full_queue_says_when_to_retry():
    status = rich_status(QueueFullError("demo", 4, 2.5))

    assert detail(status, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 2500
    assert "full" in status.message


def test_warming_up_says_when_to_retry_and_faults_say_why():
    assert detail(rich_status(NotServingError("warming", 5.0)), error_details_pb2.RetryInfo)
    crashed = detail(rich_status(ReplicaCrashedError("x")), error_details_pb2.ErrorInfo)
    assert crashed.reason == "REPLICA_CRASHED"
    oom = detail(rich_status(JobOutOfMemoryError("x")), error_details_pb2.ErrorInfo)
    assert oom.reason == "DEVICE_OUT_OF_MEMORY"


def test_unknown_job_names_the_resource():
    info = detail(rich_status(UnknownJobError("abc")), error_details_pb2.ResourceInfo)

    assert (info.resource_type, info.resource_name) == ("job", "abc")


def test_a_bug_is_internal_and_tells_nothing_of_its_insides():
    status = rich_status(RuntimeError("secret-token-123 leaked in a bug"))

    assert status.code == code_pb2.INTERNAL
    assert "secret-token-123" not in status.message
    assert grpc.StatusCode.INTERNAL.value[0] == code_pb2.INTERNAL


@pytest.mark.parametrize(
    ("error", "pushback"),
    [
        (QueueFullError("demo", 8, retry_after_s=2.5), 2500),  # accepted nothing: retry then
        (QueueFullError("demo", 8, retry_after_s=60.0), -1),  # too long for a silent retry
        (NotServingError("draining"), None),  # no estimate: the client's own backoff
        (ReplicaCrashedError("crashed"), -1),  # the job ran: never retried by the client
        (JobOutOfMemoryError("oom"), -1),
        (UnknownJobError("j"), None),  # a code the client's policy never retries
    ],
)
def test_retry_pushback_lets_clients_retry_only_what_accepted_nothing(error, pushback):
    code = grpc.StatusCode[code_pb2.Code.Name(rich_status(error).code)]
    assert retry_pushback_ms(error, code) == pushback
