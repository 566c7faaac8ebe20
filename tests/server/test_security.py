"""TLS, mutual TLS and API keys on a real server over real TLS channels on 127.0.0.1.

The PKI is made at test time (tests/certificates.py). One server runs the demo model with mutual
TLS and three keys; a second, with TLS only, reflection off and no replica, costs no worker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pointillist import (
    Client,
    PermissionDeniedError,
    ResourceExhaustedError,
    TlsSettings,
    UnauthenticatedError,
)
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from server.auth import ApiKey, Role, hash_key
from server.background import ServerThread
from tests.certificates import Pki
from tests.conftest import demo_settings
from tests.holds import new_hold

ALICE, BOB, OPS = "pk_alice-secret-key-0123456789", "pk_bob-secret-key-9876543210", "pk_ops-key"
KEYS = (
    ApiKey("alice", Role.USER, hash_key(ALICE)),
    ApiKey("bob", Role.USER, hash_key(BOB)),
    ApiKey("ops", Role.ADMIN, hash_key(OPS)),
)
# Streams that must still be open later are held after their first step (tests.holds) and
# cancelled at the end, however fast the machine is.
HELD = {"width": 64, "height": 64, "steps": 4}


@pytest.fixture(scope="module")
def secure_server(pki: Pki) -> Iterator[ServerThread]:
    settings = demo_settings(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca_cert),
        api_keys=KEYS,
        max_streams_per_caller=2,
        max_queued_per_caller=2,
    )
    server = ServerThread(settings).start()
    yield server
    server.stop()


def mtls(pki: Pki) -> TlsSettings:
    return TlsSettings(
        root_cert=pki.ca_cert, client_cert=pki.client_cert, client_key=pki.client_key
    )


def secure_channel(server: ServerThread, pki: Pki, *, with_cert: bool = True) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key.read_bytes() if with_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if with_cert else None,
    )
    return grpc.secure_channel(
        server.address, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )


def test_a_user_key_over_mutual_tls_generates_and_its_name_is_the_caller(secure_server, pki):
    with Client(secure_server.address, tls=mtls(pki), api_key=ALICE, timeout=120) as client:
        result = client.generate("over tls", width=64, height=64, steps=2, seed=3)

    assert len(result.images) == 1
    job = secure_server.wait_job_finished(result.job_id)
    assert job.caller == "alice"


def test_the_key_can_come_from_the_environment(secure_server, pki, monkeypatch):
    monkeypatch.setenv("POINTILLIST_API_KEY", BOB)
    with Client(secure_server.address, tls=mtls(pki), timeout=30) as client:
        assert [model.id for model in client.models().models] == ["demo"]


def test_missing_or_wrong_keys_are_unauthenticated_and_no_secret_is_echoed_or_logged(
    secure_server, pki, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "pk_not-a-key-of-this-server-XYZ"
    for api_key in ("", wrong, "Basic " + ALICE[3:]):
        with (
            Client(secure_server.address, tls=mtls(pki), api_key=api_key, timeout=30) as client,
            pytest.raises(UnauthenticatedError) as refused,
        ):
            client.models()
        assert "Bearer" in str(refused.value)
        assert wrong not in str(refused.value) and ALICE not in str(refused.value)
    with (
        Client(
            secure_server.address,
            tls=mtls(pki),
            metadata=[("authorization", f"Bearer {wrong}")],
            timeout=30,
        ) as client,
        pytest.raises(UnauthenticatedError),
    ):
        client.generate("no", width=64, height=64, steps=2)

    for secret in (wrong, ALICE, BOB, OPS, hash_key(ALICE)):
        assert secret not in caplog.text


def test_admin_only_status_refuses_users_and_serves_admins(secure_server, pki):
    with (
        Client(secure_server.address, tls=mtls(pki), api_key=ALICE, timeout=30) as user,
        pytest.raises(PermissionDeniedError) as denied,
    ):
        user.server_status()
    assert "admin" in str(denied.value)

    with Client(secure_server.address, tls=mtls(pki), api_key=OPS, timeout=30) as admin:
        status = admin.server_status()
    assert [replica.model for replica in status.replicas] == ["demo"]


def test_health_stays_open_without_a_key(secure_server, pki):
    with secure_channel(secure_server, pki) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_a_strange_one(
    secure_server, pki
):
    with secure_channel(secure_server, pki, with_cert=False) as channel:
        with pytest.raises(grpc.RpcError) as no_cert:
            pb_grpc.GenerationServiceStub(channel).ListModels(
                pb.ListModelsRequest(), timeout=10, metadata=[("authorization", f"Bearer {OPS}")]
            )
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE

    stranger = TlsSettings(
        root_cert=pki.ca_cert, client_cert=pki.stranger_cert, client_key=pki.stranger_key
    )
    with Client(secure_server.address, tls=stranger, api_key=OPS, timeout=10) as client:
        with pytest.raises(Exception) as strange:
            client.models()
        assert "UNAVAILABLE" in repr(strange.value) or "Unavailable" in type(strange.value).__name__


def test_one_key_is_one_caller_for_the_limits_however_many_connections(secure_server, pki):
    """Streams and queued jobs count by key name: new connections do not escape the limits."""
    clients = [
        # Each on its own connection, so only the key can tie them together.
        Client(api_key=key, channel=secure_channel(secure_server, pki))
        for key in (ALICE, ALICE, ALICE, BOB)
    ]
    streams = []
    try:
        for client in clients[:2]:
            stream = client.stream(new_hold("stream").prompt, **HELD)  # type: ignore[arg-type]
            next(iter(stream))  # accepted: its first event (queued) arrived
            streams.append(stream)
        with pytest.raises(ResourceExhaustedError) as refused:
            next(iter(clients[2].stream(new_hold("third").prompt, **HELD)))  # type: ignore[arg-type]
        assert "open streams" in str(refused.value) and refused.value.retry_after_s is not None

        bob_stream = clients[3].stream(new_hold("bob").prompt, **HELD)  # type: ignore[arg-type]
        next(iter(bob_stream))
        streams.append(bob_stream)
    finally:
        for stream in streams:
            stream.cancel()
        for client in clients:
            client._channel.close()


@pytest.fixture(scope="module")
def tls_only_server(pki: Pki) -> Iterator[ServerThread]:
    """TLS without client certificates, reflection off, and no replica (nothing to warm)."""
    settings = demo_settings(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), reflection=False
    )
    models = tuple(dataclasses.replace(model, min_replicas=0) for model in settings.models)
    server = ServerThread(dataclasses.replace(settings, models=models))
    server.start(wait_ready=False)
    yield server
    server.stop(grace_s=0.0)


def test_tls_without_client_certificates_and_plaintext_is_refused(tls_only_server, pki):
    with Client(tls_only_server.address, tls=TlsSettings(root_cert=pki.ca_cert), timeout=10) as c:
        assert [model.id for model in c.models().models] == ["demo"]
    with grpc.insecure_channel(tls_only_server.address) as plain:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GenerationServiceStub(plain).ListModels(pb.ListModelsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_reflection_can_be_turned_off(tls_only_server, pki):
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with grpc.secure_channel(tls_only_server.address, credentials) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as off:
            list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_key_file_and_tls_flags_work_from_the_cli(secure_server, pki, tmp_path: Path, capsys):
    from pointillist.cli import main

    key_file = tmp_path / "key"
    key_file.write_text(OPS + "\n")
    flags = ["--server", secure_server.address, "--tls-ca", str(pki.ca_cert)]
    flags += ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]

    assert main(["status", *flags, "--api-key-file", str(key_file)]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["status", *flags]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err.upper()
