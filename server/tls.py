"""TLS for the server: a certificate and key, and mutual TLS when a client CA is given."""

from __future__ import annotations

from pathlib import Path

import grpc


class TlsConfigError(Exception):
    """The TLS settings are incomplete or a file cannot be read; the message says which."""


def server_credentials(
    cert: str | None, key: str | None, client_ca: str | None = None
) -> grpc.ServerCredentials | None:
    """Credentials from PEM files, or None when no certificate is set (plaintext).

    With ``client_ca``, every client must present a certificate signed by that CA (mutual
    TLS); the handshake refuses one without.
    """
    if cert is None and key is None:
        if client_ca is not None:
            raise TlsConfigError("tls_client_ca needs tls_cert and tls_key")
        return None
    if cert is None or key is None:
        raise TlsConfigError("tls_cert and tls_key go together: set both")
    pair = (_read(key, "tls_key"), _read(cert, "tls_cert"))
    root = _read(client_ca, "tls_client_ca") if client_ca is not None else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=root, require_client_auth=root is not None
    )


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
