"""Request bodies the browser port cannot decode get INVALID_ARGUMENT with a BadRequest.

connect-python decodes a body before any endpoint runs, and a body that fails to decode (an enum
given as "JPEG", an unknown field, "width": "abc", -1 for a uint32, not JSON at all, corrupt
binary protobuf) ends the call as ``unknown`` with the parser's text: HTTP 500 on Connect unary.
The gRPC port answers the same bodies with INVALID_ARGUMENT (server/malformed_requests.py), so
here the codecs connect-python's server looks up are wrapped: a failed decode raises the same
status, built by server/errors.py from the same FieldViolation, naming the field where the JSON
parser says which one it was.

A compressed body is decompressed before it is decoded (Connect unary: ``Content-Encoding``;
Connect streaming and gRPC-Web: each frame with the compressed flag), and bytes that are not
valid gzip end the call as ``unknown`` too: so the compressions the applications are built with
(``compressions``) are wrapped the same way.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, cast

from connectrpc import _server_async
from connectrpc._codec import Codec
from connectrpc._compression import resolve_compressions
from connectrpc.compression import Compression
from connectrpc.errors import ConnectError
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server import errors
from server.connect_bridge import connect_code, rich_details
from server.malformed_requests import malformed_violation
from server.validation import FieldViolation, InvalidRequestError, RequestTooLargeError

# json_format's ParseError nests one "Failed to parse <json name> field: " per level.
_FIELD = re.compile(r"Failed to parse (\S+) field: ")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')
_ENUM = re.compile(r"Invalid enum value (.+?) for enum type (\S+?) at ")


class LenientDecodeCodec:
    """A codec whose decode failures are the caller's INVALID_ARGUMENT, never UNKNOWN."""

    def __init__(self, inner: Codec[Any, Any]) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message: Message) -> Message:
        try:
            return self._inner.decode(data, message)
        # Decoding is pure: whatever it raises (DecodeError, ParseError, a UnicodeDecodeError or
        # RecursionError on hostile input) is about the caller's bytes.
        except Exception as exc:
            descriptor = cast(Descriptor, message.DESCRIPTOR)  # upb's type, same interface
            json = self._inner.name() == "json"
            violation = json_violation(str(exc), descriptor) if json else None
            raise invalid_argument(violation or malformed_violation(descriptor.full_name)) from None


class LenientCompression:
    """A compression whose decompress failures are the caller's INVALID_ARGUMENT, and whose
    output is bounded by ``max_bytes``: connect-python decompresses a whole body before it
    checks its size, so a small gzip body (a "zip bomb") could otherwise expand to gigabytes in
    memory. Past the bound: RESOURCE_EXHAUSTED, as the gRPC port answers an oversized message."""

    def __init__(self, inner: Compression, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes

    def name(self) -> str:
        return self._inner.name()

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._inner.compress(data)

    def decompress(self, data: bytes | bytearray | memoryview) -> bytes:
        try:
            if self._inner.name() == "gzip":
                output = _gunzip_at_most(bytes(data), self._max_bytes)
            else:  # no other is enabled; bounded after the fact, at least
                output = self._inner.decompress(data)
        except _TooLarge:
            raise self._too_large() from None
        # Also pure: gzip raises BadGzipFile (an OSError), EOFError or zlib.error, brotli its
        # error, zstandard ZstdError; all of them mean the caller's bytes.
        except Exception as exc:
            name = self._inner.name()
            violation = FieldViolation("request", f"is not valid {name}")
            message = f"the request body is not valid {name}: {exc}"
            raise invalid_argument(violation, message) from None
        if len(output) > self._max_bytes:
            raise self._too_large()
        return output

    def _too_large(self) -> ConnectError:
        status = errors.status_for(
            RequestTooLargeError(self._max_bytes + 1, self._max_bytes, "any")
        )
        message = f"the request body decompresses to more than {self._max_bytes:,} bytes"
        return ConnectError(connect_code(status.code), message, rich_details(status))


class _TooLarge(Exception):
    pass


def _gunzip_at_most(data: bytes, max_bytes: int) -> bytes:
    """gzip.decompress (every member), stopping once the output passes ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
        chunk = inflater.decompress(data, max_bytes + 1 - size)
        size += len(chunk)
        chunks.append(chunk)
        if size > max_bytes or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = inflater.unused_data
    return b"".join(chunks)


def compressions(max_bytes: int) -> list[Compression]:
    """connect-python's default compressions (gzip), each a LenientCompression bounded by
    ``max_bytes``; identity is added by connect-python itself (it decompresses nothing)."""
    return [
        LenientCompression(compression, max_bytes)
        for name, compression in resolve_compressions(None).items()
        if name != "identity"
    ]


def invalid_argument(violation: FieldViolation, message: str | None = None) -> ConnectError:
    """The ConnectError the gRPC port's status for ``violation`` becomes on this port
    (``message`` in place of the status's, where given)."""
    status = errors.status_for(InvalidRequestError([violation]))
    return ConnectError(connect_code(status.code), message or status.details, rich_details(status))


def json_violation(text: str, descriptor: Descriptor | None) -> FieldViolation:
    """The field a json_format error names (proto names, dotted), and what was wrong with it."""
    if text.startswith("Failed to load JSON"):
        return FieldViolation("request", "is not valid JSON")
    names = _FIELD.findall(text)
    unknown = _UNKNOWN_FIELD.search(text)
    path: list[str] = []
    field: FieldDescriptor | None = None
    for json_name in names:
        field = _field(descriptor, json_name) if descriptor is not None else None
        if field is None:
            break
        path.append(field.name)
        descriptor = field.message_type
    if unknown is not None:
        return FieldViolation(
            ".".join([*path, unknown.group(1)]),
            f"is not a field of {descriptor.full_name if descriptor else 'the message'}",
        )
    if not path or field is None:
        return FieldViolation("request", "is not a valid JSON request for this method")
    enum = _ENUM.search(text)
    if enum is not None:
        return FieldViolation(
            ".".join(path), f"{enum.group(1)} is not a value of the enum {enum.group(2)}"
        )
    return FieldViolation(".".join(path), f"is not a valid {_type_name(field)} value")


def _field(descriptor: Descriptor, json_name: str) -> FieldDescriptor | None:
    for candidate in descriptor.fields:
        if json_name in (candidate.json_name, candidate.name):
            return candidate
    return None


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    names = {
        value: name for name, value in vars(FieldDescriptor).items() if name.startswith("TYPE_")
    }
    return names.get(field.type, "field").removeprefix("TYPE_").lower()


def install() -> None:
    """Make connect-python's ASGI server decode with the lenient codecs (idempotent)."""
    lookup = _server_async.get_codec
    if getattr(lookup, "lenient", False):
        return

    def lenient_get_codec(name: str) -> Codec[Any, Any] | None:
        codec = lookup(name)
        return None if codec is None else LenientDecodeCodec(codec)

    lenient_get_codec.lenient = True  # type: ignore[attr-defined]
    _server_async.get_codec = lenient_get_codec
