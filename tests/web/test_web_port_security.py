"""The browser port is no weaker than the gRPC port: HTTPS with the same certificate, and the
same API-key checks (grpc.aio interceptors never see browser calls, so the bridge checks them).

One server with TLS, keys and the browser port, and no replica (nothing here needs a worker);
plain HTTP requests in the Connect unary protocol, whose errors are HTTP statuses plus JSON.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
from collections.abc import Iterator

import pytest

from pointillist.v1 import jobs_pb2, status_pb2
from server.auth import ApiKey, Role, hash_key
from server.background import ServerThread
from tests.certificates import Pki
from tests.conftest import demo_settings

USER_KEY, ADMIN_KEY = "pk_web-user-key-0123456789", "pk_web-admin-key-0123456789"


@pytest.fixture(scope="module")
def keyed_web_server(pki: Pki) -> Iterator[ServerThread]:
    settings = demo_settings(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        api_keys=(
            ApiKey("web-user", Role.USER, hash_key(USER_KEY)),
            ApiKey("web-admin", Role.ADMIN, hash_key(ADMIN_KEY)),
        ),
        web_address="127.0.0.1:0",
    )
    models = tuple(dataclasses.replace(model, min_replicas=0) for model in settings.models)
    server = ServerThread(dataclasses.replace(settings, models=models))
    server.start(wait_ready=False)
    yield server
    server.stop(grace_s=0.0)


def call(
    server: ServerThread, pki: Pki, method: str, body: bytes, key: str | None
) -> tuple[int, dict[str, object] | bytes]:
    """One Connect unary call over HTTPS (trusting the test CA); the status and the body."""
    assert server.running is not None and server.running.web is not None
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    connection = http.client.HTTPSConnection(
        "localhost", server.running.web.port, context=context, timeout=30
    )
    headers = {"content-type": "application/proto", "connect-protocol-version": "1"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    try:
        connection.request("POST", f"/pointillist.v1.{method}", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.status == 200:
        return 200, payload
    return response.status, json.loads(payload)


def get_job(job_id: str) -> bytes:
    return jobs_pb2.GetJobRequest(job_id=job_id).SerializeToString()


def test_browser_calls_without_a_valid_key_are_unauthenticated(keyed_web_server, pki):
    for key in (None, "pk_not-a-key-of-this-server"):
        status, body = call(keyed_web_server, pki, "JobService/GetJob", get_job("x"), key)
        assert status == 401
        assert isinstance(body, dict) and body["code"] == "unauthenticated"
        assert "Bearer" in str(body["message"]) and "pk_not" not in str(body["message"])


def test_a_valid_key_reaches_the_servicer_and_admin_methods_need_an_admin(keyed_web_server, pki):
    status, body = call(keyed_web_server, pki, "JobService/GetJob", get_job("nope"), USER_KEY)
    assert status == 404 and isinstance(body, dict) and body["code"] == "not_found"

    request = status_pb2.GetServerStatusRequest().SerializeToString()
    status, body = call(keyed_web_server, pki, "StatusService/GetServerStatus", request, USER_KEY)
    assert status == 403 and isinstance(body, dict) and body["code"] == "permission_denied"

    status, body = call(keyed_web_server, pki, "StatusService/GetServerStatus", request, ADMIN_KEY)
    assert status == 200
    assert isinstance(body, bytes)
    reply = status_pb2.GetServerStatusResponse.FromString(body)
    assert [model.model for model in reply.models] == ["demo"]


def test_the_browser_port_speaks_https_only_when_tls_is_configured(keyed_web_server):
    assert keyed_web_server.running is not None and keyed_web_server.running.web is not None
    plain = http.client.HTTPConnection("127.0.0.1", keyed_web_server.running.web.port, timeout=10)
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain.request("GET", "/")
            plain.getresponse()
    finally:
        plain.close()
