"""Compressed bodies the browser port cannot decompress get invalid_argument, as undecodable ones
do (tests/web/test_web_decoding.py): never HTTP 500 ``unknown`` with gzip's exception text.
Connect unary (Content-Encoding), Connect streaming (Connect-Content-Encoding) and gRPC-Web
(grpc-encoding, compressed-flag frames), JSON and binary, over real HTTP to a real server."""

from __future__ import annotations

import gzip

import pytest

from tests.web.raw_calls import CONNECT_STREAM, CONNECT_UNARY, GRPC_WEB, PROTOCOLS, call

LIST_MODELS = "/pointillist.v1.GenerationService/ListModels"
STREAM = "/pointillist.v1.GenerationService/StreamGenerate"
NOT_GZIP = [
    pytest.param(b"\x1f\x8bgarbage", id="gzip-magic-then-garbage"),
    pytest.param(gzip.compress(b'{"parameters": {}}')[:-6], id="truncated"),
    pytest.param(b"this was never compressed", id="plain-text"),
    pytest.param(gzip.compress(b"{}")[:10] + b"\xff" * 20, id="corrupt-deflate"),
]


def method_for(protocol: str) -> str:
    return STREAM if protocol == CONNECT_STREAM else LIST_MODELS


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("codec", ["json", "proto"])
@pytest.mark.parametrize("body", NOT_GZIP)
def test_a_body_that_is_not_valid_gzip_is_invalid_argument(
    web_url: str, protocol: str, codec: str, body: bytes
) -> None:
    outcome = call(web_url, method_for(protocol), protocol, codec, body, compression="gzip")

    assert outcome.code == "invalid_argument", outcome
    assert outcome.fields == ["request"], outcome
    assert outcome.message.startswith("the request body is not valid gzip: "), outcome
    if protocol == CONNECT_UNARY:
        assert outcome.http_status == 400


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_valid_gzip_body_still_decodes(web_url: str, protocol: str) -> None:
    body = gzip.compress(b"{}")
    outcome = call(web_url, method_for(protocol), protocol, "json", body, compression="gzip")

    # StreamGenerate's empty request is decoded, then refused by validation (no prompt).
    assert outcome.code == ("invalid_argument" if protocol == CONNECT_STREAM else "ok"), outcome
    assert not outcome.message.startswith("the request body"), outcome


def test_gzip_of_a_corrupt_message_is_the_decoder_s_invalid_argument(web_url: str) -> None:
    for protocol in (CONNECT_UNARY, GRPC_WEB):
        body = gzip.compress(b"\xff\xff\xff\xff")
        outcome = call(web_url, LIST_MODELS, protocol, "proto", body, compression="gzip")

        assert outcome.code == "invalid_argument", (protocol, outcome)
        assert "corrupt wire format" in outcome.message, (protocol, outcome)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_gzip_bomb_is_refused_before_it_expands(web_url: str, protocol: str) -> None:
    """64 MiB of zeros in about 64 KiB of gzip: past the port's limit (the demo model's 8 MiB)
    it is RESOURCE_EXHAUSTED, as the gRPC port answers an oversized message, and the server never
    holds the 64 MiB (decompression stops at the limit)."""
    body = gzip.compress(b"\0" * (64 << 20), compresslevel=1)
    assert len(body) < 1 << 20  # the body itself is within the limit

    outcome = call(web_url, method_for(protocol), protocol, "proto", body, compression="gzip")

    assert outcome.code == "resource_exhausted", outcome
    assert "decompresses to more than" in outcome.message, outcome
