"""One demo server with its browser port open, for the web tests (module-scoped: it has its
own worker process, apart from the shared gRPC-only server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.background import ServerThread
from tests.conftest import demo_settings

ALLOWED_ORIGIN = "http://allowed.example"


@pytest.fixture(scope="package")
def web_server() -> Iterator[ServerThread]:
    server = ServerThread(
        demo_settings(web_address="127.0.0.1:0", web_allowed_origins=(ALLOWED_ORIGIN,))
    ).start()
    yield server
    server.stop()


@pytest.fixture
def web_url(web_server: ServerThread) -> str:
    assert web_server.running is not None and web_server.running.web is not None
    return f"http://127.0.0.1:{web_server.running.web.port}"
