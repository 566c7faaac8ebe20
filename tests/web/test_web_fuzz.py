"""The fuzzing of tests/server/test_fuzz.py, on the browser port: random bytes and mutated JSON
as the body, plain or labelled gzip (valid gzip of garbage, truncated gzip, bytes that are not
gzip at all), Connect and gRPC-Web, unary and streaming. Only defined codes come back (never
unknown or internal), an invalid_argument always carries a BadRequest, and the port stays up."""

from __future__ import annotations

import gzip
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.test_fuzz import RAW_METHODS
from tests.web.raw_calls import CONNECT_STREAM, CONNECT_UNARY, GRPC_WEB, Outcome, call

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A body that happens to be valid runs a real job: the short deadline ends it.
DEFINED = {
    "ok",
    "invalid_argument",
    "not_found",
    "resource_exhausted",
    "deadline_exceeded",
    "canceled",
}
FIELDS = [
    "model",
    "prompt",
    "negativePrompt",
    "width",
    "height",
    "steps",
    "guidanceScale",
    "seed",
    "numImages",
    "outputFormat",
    "quality",
    "preview",
    "colour",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
mutated_json = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4).map(
    lambda fields: json.dumps({"parameters": fields}).encode()
)

# What a body labelled gzip may really be: gzip of any bytes, gzip cut short, not gzip at all.
gzip_bodies = (
    st.binary(max_size=1024).map(gzip.compress)
    | st.tuples(st.binary(min_size=1, max_size=1024), st.integers(min_value=1, max_value=30)).map(
        lambda cut: gzip.compress(cut[0])[: -cut[1]]
    )
    | st.binary(max_size=1024)
    | st.binary(max_size=64).map(lambda rest: b"\x1f\x8b" + rest)
)


def protocols_for(method: str) -> list[str]:
    connect = CONNECT_UNARY if RAW_METHODS[method] == "unary" else CONNECT_STREAM
    return [connect, GRPC_WEB]


def assert_defined(outcome: Outcome) -> None:
    assert outcome.code in DEFINED, outcome
    assert "Traceback" not in outcome.message
    if outcome.code == "invalid_argument":
        assert outcome.fields, outcome


@FUZZ
@given(
    method=st.sampled_from(sorted(RAW_METHODS)),
    codec=st.sampled_from(["json", "proto"]),
    body=st.binary(max_size=2048),
)
def test_random_bytes_as_the_body_get_only_defined_codes(web_url, method, codec, body):
    for protocol in protocols_for(method):
        assert_defined(call(web_url, method, protocol, codec, body, timeout_ms=3000))


@FUZZ
@given(method=st.sampled_from(sorted(RAW_METHODS)), body=mutated_json)
def test_mutated_json_gets_only_defined_codes(web_url, method, body):
    for protocol in protocols_for(method):
        assert_defined(call(web_url, method, protocol, "json", body, timeout_ms=3000))


@FUZZ
@given(
    method=st.sampled_from(sorted(RAW_METHODS)),
    codec=st.sampled_from(["json", "proto"]),
    body=gzip_bodies | mutated_json.map(lambda body: gzip.compress(body)[:-4]),
)
def test_bodies_labelled_gzip_get_only_defined_codes(web_url, method, codec, body):
    for protocol in protocols_for(method):
        outcome = call(web_url, method, protocol, codec, body, timeout_ms=3000, compression="gzip")
        assert_defined(outcome)


def test_the_web_port_still_serves_after_the_fuzzing(web_url):
    body = b'{"parameters": {"prompt": "still fine", "width": 64, "height": 64, "steps": 2}}'
    generate = "/pointillist.v1.GenerationService/Generate"
    assert call(web_url, generate, CONNECT_UNARY, "json", body).code == "ok"
