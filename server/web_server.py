"""The browser port: Connect / gRPC-Web for the same services, and the web page at ``/``.

grpc.aio owns its HTTP/2 port, so browsers get a second one, served by uvicorn on the server's
own event loop (same process, same scheduler, same servicers). Off unless ``web_address`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from google.protobuf.descriptor import ServiceDescriptor
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server import web_decoding
from server.auth import KeyRing
from server.connect_bridge import ServiceApplication, service_applications

log = logging.getLogger("pointillist.server")

WEB_ROOT = Path(__file__).resolve().parents[1] / "clients" / "web"
"""The page (clients/web); ``make web`` bundles its script into dist/."""
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/app.js": ("dist/app.js", "text/javascript; charset=utf-8"),
}
# Headers a cross-origin browser client must be allowed to send and to read.
_ALLOWED_HEADERS = [
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "authorization",
]
_EXPOSED_HEADERS = ["grpc-status", "grpc-message", "grpc-status-details-bin"]
_SHUTDOWN_GRACE_S = 2


class WebApplication:
    """Routes RPC paths to their service, the page's files to disk, anything else to 404."""

    def __init__(self, services: Mapping[str, ServiceApplication], page: bool) -> None:
        self._services = dict(services)
        self._page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket work to do
        path: str = scope["path"]
        service = self._services.get(path[: path.rfind("/")]) if path.count("/") == 2 else None
        if service is not None:
            await service(scope, receive, send)
            return
        response = self._page_file(path, scope["method"])
        await response(scope, receive, send)

    def _page_file(self, path: str, method: str) -> PlainTextResponse | FileResponse:
        entry = PAGE_FILES.get(path) if self._page else None
        if entry is None:
            return PlainTextResponse("not found", status_code=404)
        if method not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed", status_code=405)
        name, media_type = entry
        file = WEB_ROOT / name
        if not file.is_file():
            return PlainTextResponse(f"{name} is missing: run `make web`", status_code=503)
        return FileResponse(file, media_type=media_type, headers={"cache-control": "no-cache"})


def build_application(
    servicers: Mapping[ServiceDescriptor, object],
    allowed_origins: tuple[str, ...] = (),
    page: bool = True,
    read_max_bytes: int = 1 << 20,
    keys: KeyRing | None = None,
) -> ASGIApp:
    """The ASGI app: services, the page, and CORS for ``allowed_origins`` (none: same origin
    only; ``*``: any). With ``keys``, RPCs need an API key exactly as on the gRPC port."""
    web_decoding.install()  # undecodable bodies: INVALID_ARGUMENT, as on the gRPC port
    # and so are compressed bodies that do not decompress
    services = service_applications(
        servicers, read_max_bytes, keys, web_decoding.compressions(read_max_bytes)
    )
    app: ASGIApp = WebApplication(services, page)
    if allowed_origins:
        app = CORSMiddleware(
            app,
            allow_origins=list(allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=_ALLOWED_HEADERS,
            expose_headers=_EXPOSED_HEADERS,
            max_age=3600,
        )
    return app


class _LoopServer(uvicorn.Server):
    """uvicorn inside a loop it does not own: the pointillist CLI handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class WebServer:
    """A started browser port."""

    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop accepting, give open streams a moment to finish, close the rest."""
        self.server.should_exit = True
        try:
            await self.task
        except Exception:
            log.exception("web server ended with an error")


@dataclass(frozen=True)
class WebTls:
    """PEM paths for HTTPS on the browser port; ``client_ca`` requires client certificates."""

    cert: str
    key: str
    client_ca: str | None = None

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ssl_certfile": self.cert, "ssl_keyfile": self.key}
        if self.client_ca is not None:
            options.update(ssl_ca_certs=self.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options


async def start_web_server(
    address: str,
    servicers: Mapping[ServiceDescriptor, object],
    allowed_origins: tuple[str, ...] = (),
    page: bool = True,
    read_max_bytes: int = 1 << 20,
    keys: KeyRing | None = None,
    tls: WebTls | None = None,
) -> WebServer:
    """Bind ``address`` (``host:port``; port 0 picks a free one) and serve on this loop.

    ``tls``: the gRPC port's certificate, key and client CA, so the browser port is no weaker
    than the gRPC port (HTTPS, and client certificates when the gRPC port asks for them)."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port_text)))
    except (OSError, ValueError) as exc:
        sock.close()
        raise RuntimeError(f"cannot bind the web port {address}: {exc}") from exc
    # Listening now means a client that connects before uvicorn's first tick just waits.
    sock.listen(128)
    config = uvicorn.Config(
        build_application(servicers, tuple(allowed_origins), page, read_max_bytes, keys),
        lifespan="off",
        http="h11",
        ws="none",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
        **(tls.uvicorn_options() if tls is not None else {}),
    )
    server = _LoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="web-server")
    port = sock.getsockname()[1]
    log.info("web (Connect, gRPC-Web, page) on %s (port %d)", address, port)
    return WebServer(port, server, task)
