"""INVALID_ARGUMENT with a BadRequest naming every bad field; NOT_FOUND for unknown models."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pointillist.v1 import generation_pb2 as pb


def status_of(error: grpc.RpcError):
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no rich status"
    return status


def violations_of(error: grpc.RpcError) -> dict[str, str]:
    bad = error_details_pb2.BadRequest()
    (detail,) = status_of(error).details
    assert detail.Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


def call_with(stub, **fields: object) -> grpc.RpcError:
    values: dict[str, object] = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}
    values.update(fields)
    request = pb.StreamGenerateRequest(parameters=pb.GenerationParameters(**values))  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamGenerate(request, timeout=30))
    return caught.value


@pytest.mark.parametrize(
    ("fields", "bad_field", "words"),
    [
        ({"prompt": ""}, "parameters.prompt", "must not be empty"),
        ({"prompt": "   "}, "parameters.prompt", "must not be empty"),
        ({"prompt": "x" * 2001}, "parameters.prompt", "limit is 2000"),
        ({"negative_prompt": "x" * 2001}, "parameters.negative_prompt", "limit is 2000"),
        ({"width": 100}, "parameters.width", "multiple of 16"),
        ({"height": 1024}, "parameters.height", "between 64 and 512"),
        ({"width": 32}, "parameters.width", "between 64 and 512"),
        ({"steps": 101}, "parameters.steps", "between 1 and 100"),
        ({"guidance_scale": -1.0}, "parameters.guidance_scale", "between 0 and 30"),
        ({"guidance_scale": float("nan")}, "parameters.guidance_scale", "between 0 and 30"),
        ({"num_images": 5}, "parameters.num_images", "between 1 and 4"),
        ({"output_format": 9}, "parameters.output_format", "unknown format"),
        ({"quality": 101}, "parameters.quality", "between 1 and 100"),
        (
            {"preview": pb.PreviewOptions(every_n_steps=1, max_size=4096)},
            "parameters.preview.max_size",
            "between 16 and 1024",
        ),
        (
            {"preview": pb.PreviewOptions(every_n_steps=500)},
            "parameters.preview.every_n_steps",
            "at most 100",
        ),
    ],
)
def test_each_bad_field_is_named(stub, fields, bad_field, words):
    error = call_with(stub, **fields)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = violations_of(error)
    assert bad_field in violations
    assert words in violations[bad_field]


def test_every_bad_field_is_reported_at_once(stub):
    error = call_with(stub, prompt="", width=100, steps=1000, num_images=9)

    assert set(violations_of(error)) == {
        "parameters.prompt",
        "parameters.width",
        "parameters.steps",
        "parameters.num_images",
    }


def test_unary_generate_validates_the_same_way(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(pb.GenerateRequest(parameters=pb.GenerationParameters(prompt="")), timeout=30)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.prompt" in violations_of(caught.value)


def test_unknown_model_is_not_found_and_names_the_model(stub):
    error = call_with(stub, model="sd35-nonexistent")

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "sd35-nonexistent" in error.details()
    info = error_details_pb2.ResourceInfo()
    assert status_of(error).details[0].Unpack(info)
    assert info.resource_type == "model" and info.resource_name == "sd35-nonexistent"


def test_errors_never_carry_a_traceback(stub):
    error = call_with(stub, width=100)

    assert "Traceback" not in (error.details() or "")
