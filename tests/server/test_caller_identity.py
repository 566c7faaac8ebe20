"""Without API keys a caller is its IP, not its connection (issue 14, isolation).

Counting by the peer string (ip:port) let a client escape the per-caller stream limit by opening
new connections. A real server with a one-stream limit and real channels, each a connection of
its own from 127.0.0.1; held jobs (tests.holds) keep the streams open.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from server.background import ServerThread
from server.caller_identity import forwarded_client, peer_address, trusted_networks
from server.settings import ConfigError, load_settings
from tests.conftest import demo_settings
from tests.holds import new_hold


def held_request() -> pb.StreamGenerateRequest:
    return pb.StreamGenerateRequest(
        parameters=pb.GenerationParameters(
            prompt=new_hold("stream").prompt, width=64, height=64, steps=4
        )
    )


def first_event_code(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[Any, grpc.StatusCode | None]:
    """Opens a held stream; returns (the call, None) once accepted, or (None, its error code)."""
    call = pb_grpc.GenerationServiceStub(channel).StreamGenerate(
        held_request(), timeout=60, metadata=metadata
    )
    try:
        next(call)
    except grpc.RpcError as error:
        return None, error.code()
    return call, None


@pytest.fixture(scope="module")
def one_stream_server() -> Iterator[ServerThread]:
    server = ServerThread(
        demo_settings(max_streams_per_caller=1, trusted_proxies=("127.0.0.1/32",))
    ).start()
    yield server
    server.stop()


def own_connection(server: ServerThread) -> grpc.Channel:
    """A channel with a connection of its own: channels to one target otherwise share one."""
    return grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_a_second_connection_from_the_same_ip_is_the_same_caller(one_stream_server):
    with own_connection(one_stream_server) as first, own_connection(one_stream_server) as second:
        held, error = first_event_code(first)
        assert held is not None, error
        try:
            _, refused = first_event_code(second)
            assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            held.cancel()


def test_behind_a_trusted_proxy_the_forwarded_client_is_the_caller(one_stream_server):
    with one_stream_server.channel() as channel:
        alice = (("x-forwarded-for", "10.1.1.1"),)
        held, error = first_event_code(channel, alice)
        assert held is not None, error
        try:
            other, error = first_event_code(channel, (("x-forwarded-for", "10.2.2.2"),))
            assert other is not None, error  # another client behind the same proxy
            other.cancel()
            # A client cannot pick its identity: only the proxy's own (right-most) entry counts.
            spoofed = (("x-forwarded-for", "10.9.9.9, 10.1.1.1"),)
            assert first_event_code(channel, spoofed)[1] == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            held.cancel()


def test_addresses_and_forwarded_chains():
    assert peer_address("ipv4:127.0.0.1:53422") == "ipv4:127.0.0.1"
    assert peer_address("ipv6:[::1]:53422") == "ipv6:[::1]"
    assert peer_address("unix:/tmp/socket") == "unix:/tmp/socket"
    proxies = trusted_networks(["10.0.0.0/8"])
    assert forwarded_client("ipv4:10.0.0.5:1", ["203.0.113.7"], proxies) == "ipv4:203.0.113.7"
    # Right-most untrusted hop: the proxies' own entries are skipped, the client's ignored.
    chain = ["198.51.100.1, 203.0.113.7, 10.0.0.9"]
    assert forwarded_client("ipv4:10.0.0.5:1", chain, proxies) == "ipv4:203.0.113.7"
    assert forwarded_client("ipv4:192.0.2.1:1", ["203.0.113.7"], proxies) is None  # untrusted
    assert forwarded_client("ipv4:10.0.0.5:1", ["not-an-ip"], proxies) is None


def test_a_malformed_trusted_proxy_is_a_config_error(tmp_path):
    config = tmp_path / "pointillist.toml"
    config.write_text('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n')
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(config, environ={})
