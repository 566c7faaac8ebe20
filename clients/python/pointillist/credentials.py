"""How a client proves who it is: TLS settings (server CA, client certificate) and an API key.

from pointillist import Client, TlsSettings

tls = TlsSettings(root_cert="ca.pem", client_cert="me.pem", client_key="me.key")
with Client("models.internal:50051", tls=tls, api_key="pk_...") as client:
    ...

Without ``api_key``, the clients read ``$POINTILLIST_API_KEY``; the key travels as the
metadata ``authorization: Bearer <key>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = ["API_KEY_ENV", "TlsSettings", "call_metadata"]

API_KEY_ENV = "POINTILLIST_API_KEY"


@dataclass(frozen=True)
class TlsSettings:
    """TLS to the server. Every path is a PEM file; all are optional.

    ``root_cert``: the CA that signed the server's certificate (default: the system's roots).
    ``client_cert`` and ``client_key``: this client's certificate, for servers that require
    mutual TLS. ``server_name``: the name to check the server's certificate against, when it
    differs from the host in the target.
    """

    root_cert: str | Path | None = None
    client_cert: str | Path | None = None
    client_key: str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these settings describe."""
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options these settings need (the server name override)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def call_metadata(
    metadata: Sequence[tuple[str, str]],
    api_key: str | None,
    environ: Mapping[str, str] = os.environ,
) -> tuple[tuple[str, str], ...]:
    """``metadata`` plus ``authorization: Bearer <key>`` for ``api_key`` (else
    ``$POINTILLIST_API_KEY``), unless ``metadata`` already carries an authorization."""
    pairs = tuple((key, value) for key, value in metadata)
    key = api_key if api_key is not None else environ.get(API_KEY_ENV, "")
    if not key.strip() or any(name.lower() == "authorization" for name, _ in pairs):
        return pairs
    return (*pairs, ("authorization", f"Bearer {key.strip()}"))


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None
