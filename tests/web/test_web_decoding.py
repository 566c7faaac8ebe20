"""Bodies the browser port cannot decode get invalid_argument and a BadRequest, as on the gRPC
port: never HTTP 500 ``unknown`` with the parser's text. Unary and server-streaming, Connect and
gRPC-Web, JSON and binary, over real HTTP to a real server."""

from __future__ import annotations

import pytest

from tests.web.raw_calls import CONNECT_STREAM, CONNECT_UNARY, GRPC_WEB, PROTOCOLS, call

UNARY = "/pointillist.v1.GenerationService/Generate"
STREAM = "/pointillist.v1.GenerationService/StreamGenerate"
JSON_CASES = [
    (b'{"parameters": {"outputFormat": "JPEG"}}', "parameters.output_format"),
    (b'{"parameters": {"output_format": "JPEG"}}', "parameters.output_format"),
    (b'{"parameters": {"colour": "red"}}', "parameters.colour"),
    (b'{"parameters": {"width": "abc"}}', "parameters.width"),
    (b'{"parameters": {"width": -1}}', "parameters.width"),
    (b'{"parameters": {"seed": 18446744073709551616}}', "parameters.seed"),
    (b'{"parameters": {"preview": {"everyNSteps": "often"}}}', "parameters.preview.every_n_steps"),
    (b"this is not json", "request"),
    (b"\xff\xfe{", "request"),
    (b"[1, 2]", "request"),
]
BINARY_CASES = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"]


def methods_for(protocol: str) -> list[str]:
    # Connect has a protocol for each kind of method; gRPC-Web's envelopes carry both.
    return {CONNECT_UNARY: [UNARY], CONNECT_STREAM: [STREAM]}.get(protocol, [UNARY, STREAM])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("body", "field"), JSON_CASES)
def test_undecodable_json_is_invalid_argument_naming_the_field(
    web_url: str, protocol: str, body: bytes, field: str
) -> None:
    for method in methods_for(protocol):
        outcome = call(web_url, method, protocol, "json", body)

        assert outcome.code == "invalid_argument", (method, outcome)
        assert outcome.fields == [field], (method, outcome)
        assert "Failed to parse" not in outcome.message  # no parser text
        if protocol == CONNECT_UNARY:
            assert outcome.http_status == 400


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("body", BINARY_CASES)
def test_corrupt_binary_protobuf_is_invalid_argument(
    web_url: str, protocol: str, body: bytes
) -> None:
    for method in methods_for(protocol):
        outcome = call(web_url, method, protocol, "proto", body)

        assert outcome.code == "invalid_argument", (method, outcome)
        assert outcome.fields == ["request"], (method, outcome)
        assert "corrupt wire format" in outcome.message


def test_a_well_formed_body_still_runs(web_url: str) -> None:
    body = b'{"parameters": {"prompt": "a pier", "width": 64, "height": 64, "steps": 2}}'
    for protocol, method in ((CONNECT_UNARY, UNARY), (CONNECT_STREAM, STREAM), (GRPC_WEB, STREAM)):
        assert call(web_url, method, protocol, "json", body).code == "ok", protocol
