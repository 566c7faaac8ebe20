"""Shutdown ends the open-ended streams itself: Health Watch and reflection streams still open
when the server stops end UNAVAILABLE with a message, and grpc logs no CancelledError traceback
for them (issue 14: a drain is not an error)."""

from __future__ import annotations

import logging
import queue

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.background import ServerThread
from server.open_streams import SHUTTING_DOWN
from tests.conftest import demo_settings


def test_shutdown_ends_health_watch_and_reflection_streams_with_unavailable(caplog):
    server = ServerThread(demo_settings()).start()
    stopped = False
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [
                health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=120)
                for name in ("", "pointillist.v1.JobService")
            ]
            for watch in watches:
                next(watch)  # the stream is open on the server

            requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
            requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter(requests.get, None), timeout=120
            )
            assert next(reflection).list_services_response.service

            with caplog.at_level(logging.ERROR):
                server.stop()
                stopped = True

            for call in (*watches, reflection):
                with pytest.raises(grpc.RpcError) as caught:
                    list(call)  # NOT_SERVING updates, then the end
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert caught.value.details() == SHUTTING_DOWN
            requests.put(None)
    finally:
        if not stopped:
            server.stop()
    assert "Exception not handled" not in caplog.text
    assert "CancelledError" not in caplog.text
