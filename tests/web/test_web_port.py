"""The browser port: the same services over Connect and gRPC-Web, CORS, and the page's files.

A real server (demo model, real worker) and connect-python's own client over real HTTP.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest
from connectrpc.client import ConnectClientSync
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.protocol import ProtocolType
from google.rpc import error_details_pb2

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2
from server.background import ServerThread
from tests.web.conftest import ALLOWED_ORIGIN

STREAM = MethodInfo(
    name="StreamGenerate",
    service_name="pointillist.v1.GenerationService",
    input=pb.StreamGenerateRequest,
    output=pb.StreamGenerateResponse,
    idempotency_level=IdempotencyLevel.UNKNOWN,
)
GET_JOB = MethodInfo(
    name="GetJob",
    service_name="pointillist.v1.JobService",
    input=jobs_pb2.GetJobRequest,
    output=jobs_pb2.GetJobResponse,
    idempotency_level=IdempotencyLevel.UNKNOWN,
)


def request(**fields: object) -> pb.StreamGenerateRequest:
    values: dict[str, object] = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64}
    values.update(fields)
    return pb.StreamGenerateRequest(parameters=pb.GenerationParameters(**values))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", [ProtocolType.CONNECT, ProtocolType.GRPC_WEB])
def test_stream_over_browser_protocols_sends_every_step_then_the_result(
    web_url: str, protocol: ProtocolType
) -> None:
    with ConnectClientSync(web_url, protocol=protocol, timeout_ms=120_000) as client:
        events = list(
            client.execute_server_stream(
                request=request(steps=4, seed=9, preview=pb.PreviewOptions(every_n_steps=2)),
                method=STREAM,
            )
        )

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "result"
    assert [e.progress.step for e in events if e.HasField("progress")] == [1, 2, 3, 4]
    assert [e.preview.step for e in events if e.HasField("preview")] == [2, 4]
    image = events[-1].result.images[0]
    assert image.seed == 9 and image.data.startswith(b"\x89PNG")


@pytest.mark.parametrize("protocol", [ProtocolType.CONNECT, ProtocolType.GRPC_WEB])
def test_invalid_request_fails_with_bad_request_field_violations(
    web_url: str, protocol: ProtocolType
) -> None:
    client = ConnectClientSync(web_url, protocol=protocol, timeout_ms=30_000)
    with client, pytest.raises(ConnectError) as caught:
        list(client.execute_server_stream(request=request(width=65), method=STREAM))

    assert caught.value.code == Code.INVALID_ARGUMENT
    violations = []
    for detail in caught.value.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations.extend(bad.field_violations)
    assert [v.field for v in violations] == ["parameters.width"]
    assert "16" in violations[0].description


def test_unknown_job_is_not_found_with_resource_info(web_url: str) -> None:
    client = ConnectClientSync(web_url, timeout_ms=30_000)
    with client, pytest.raises(ConnectError) as caught:
        client.execute_unary(request=jobs_pb2.GetJobRequest(job_id="nope"), method=GET_JOB)

    assert caught.value.code == Code.NOT_FOUND
    info = error_details_pb2.ResourceInfo()
    assert any(detail.Unpack(info) for detail in caught.value.details)
    assert (info.resource_type, info.resource_name) == ("job", "nope")


def test_the_same_scheduler_serves_both_ports(web_server: ServerThread, web_url: str) -> None:
    """A job started on the browser port is a job of the gRPC server: GetJob over gRPC finds it."""
    with ConnectClientSync(web_url, timeout_ms=120_000) as client:
        events = list(client.execute_server_stream(request=request(steps=2), method=STREAM))
    with web_server.channel() as channel:
        get_job = channel.unary_unary(
            "/pointillist.v1.JobService/GetJob",
            request_serializer=jobs_pb2.GetJobRequest.SerializeToString,
            response_deserializer=jobs_pb2.GetJobResponse.FromString,
        )
        job = get_job(jobs_pb2.GetJobRequest(job_id=events[0].job_id), timeout=10).job
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED


def fetch(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_cors_preflight_allows_only_the_configured_origins(web_url: str) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,connect-protocol-version",
    }
    path = "/pointillist.v1.GenerationService/StreamGenerate"

    allowed = fetch(web_url, path, "OPTIONS", {"Origin": ALLOWED_ORIGIN, **preflight})
    other = fetch(web_url, path, "OPTIONS", {"Origin": "http://evil.example", **preflight})

    assert allowed.status == 200
    assert allowed.getheader("access-control-allow-origin") == ALLOWED_ORIGIN
    assert other.status == 400
    assert other.getheader("access-control-allow-origin") is None


def test_page_is_served_at_the_root_and_nothing_else_is(web_url: str) -> None:
    page = fetch(web_url, "/")
    script = fetch(web_url, "/app.js")

    assert page.status == 200 and page.getheader("content-type", "").startswith("text/html")
    assert script.status == 200, "the page's script is bundled by `make web`"
    assert fetch(web_url, "/../pyproject.toml").status == 404
    assert fetch(web_url, "/index.html").status == 404
