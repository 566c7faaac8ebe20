"""Raw HTTP calls to the browser port: any bytes as the body, the error read back by hand.

connect-python's client only sends well-formed messages, so the decode tests and the fuzzing
build Connect and gRPC-Web requests themselves, over a real http.client connection.
"""

from __future__ import annotations

import base64
import http.client
import json
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from google.rpc import error_details_pb2, status_pb2

CONNECT_UNARY = "connect-unary"
CONNECT_STREAM = "connect-stream"
GRPC_WEB = "grpc-web"
PROTOCOLS = (CONNECT_UNARY, CONNECT_STREAM, GRPC_WEB)
_ENCODING_HEADERS = {
    CONNECT_UNARY: "content-encoding",
    CONNECT_STREAM: "connect-content-encoding",
    GRPC_WEB: "grpc-encoding",
}


@dataclass
class Outcome:
    """How a call ended: its code (Connect spelling, ``ok`` if none), HTTP status, violations."""

    http_status: int
    code: str
    message: str
    fields: list[str]


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def content_type(protocol: str, codec: str) -> str:
    if protocol == CONNECT_UNARY:
        return f"application/{codec}"
    if protocol == CONNECT_STREAM:
        return f"application/connect+{codec}"
    return f"application/grpc-web+{codec}"


def call(
    base_url: str,
    method: str,
    protocol: str,
    codec: str,
    body: bytes,
    timeout_ms: int = 120_000,
    compression: str | None = None,
) -> Outcome:
    """POST ``body`` (enveloped, for the streaming protocols) to ``method`` and read the end.
    ``timeout_ms`` is the call's deadline (a body that happens to be valid runs a real job).
    ``compression`` names the encoding ``body`` claims to be in (sent as is, in a frame with
    the compressed flag for the streaming protocols)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
    headers = {
        "content-type": content_type(protocol, codec),
        "connect-timeout-ms": str(timeout_ms),
        "grpc-timeout": f"{timeout_ms}m",
    }
    if compression is not None:
        headers[_ENCODING_HEADERS[protocol]] = compression
    if protocol != CONNECT_UNARY:
        body = envelope(body, flags=0 if compression is None else 1)
    try:
        connection.request("POST", method, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if protocol == CONNECT_UNARY:
        if response.status == 200:
            return Outcome(200, "ok", "", [])
        return _connect_error(response.status, json.loads(data))
    frames = _frames(data)
    end_flags, end = frames[-1] if frames else (0, b"")
    if protocol == CONNECT_STREAM:
        assert end_flags & 0x02, ("no end-of-stream message", response.status, data[:200])
        error = json.loads(end).get("error")
        return _connect_error(response.status, error) if error else Outcome(200, "ok", "", [])
    trailers = dict(response.getheaders())
    if end_flags & 0x80:
        for line in end.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key:
                trailers[key.strip().lower()] = value.strip()
    return _grpc_web_error(response.status, trailers)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    frames, offset = [], 0
    while offset + 5 <= len(data):
        flags, length = struct.unpack(">BI", data[offset : offset + 5])
        frames.append((flags, data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return frames


def _connect_error(http_status: int, error: dict[str, object]) -> Outcome:
    fields: list[str] = []
    for detail in error.get("details", []):  # type: ignore[attr-defined]
        if detail["type"] == "google.rpc.BadRequest":
            value = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
            bad = error_details_pb2.BadRequest.FromString(value)
            fields.extend(v.field for v in bad.field_violations)
    return Outcome(http_status, str(error["code"]), str(error.get("message", "")), fields)


_GRPC_CODES = {
    0: "ok",
    1: "canceled",
    2: "unknown",
    3: "invalid_argument",
    4: "deadline_exceeded",
    5: "not_found",
    8: "resource_exhausted",
    12: "unimplemented",
    13: "internal",
    14: "unavailable",
}


def _grpc_web_error(http_status: int, trailers: dict[str, str]) -> Outcome:
    code = _GRPC_CODES.get(int(trailers.get("grpc-status", "2")), "other")
    fields: list[str] = []
    details = trailers.get("grpc-status-details-bin")
    if details:
        status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                fields.extend(v.field for v in bad.field_violations)
    return Outcome(http_status, code, unquote(trailers.get("grpc-message", "")), fields)
