"""Test PKI made at test time with `cryptography`: a CA, a server certificate for 127.0.0.1
and localhost, and client certificates (one from the CA, one from a stranger CA)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by a CA the server does not trust
    stranger_key: Path


def make_pki(folder: Path) -> Pki:
    ca_key, ca_cert = _certificate("pointillist test CA", None, None, ca=True)
    server_key, server_cert = _certificate(
        "localhost", ca_key, ca_cert, sans=["localhost", "127.0.0.1"], server=True
    )
    client_key, client_cert = _certificate("test client", ca_key, ca_cert)
    other_ca_key, other_ca_cert = _certificate("stranger CA", None, None, ca=True)
    stranger_key, stranger_cert = _certificate("stranger", other_ca_key, other_ca_cert)
    files = {
        "ca_cert": _pem(ca_cert),
        "server_cert": _pem(server_cert),
        "server_key": _key_pem(server_key),
        "client_cert": _pem(client_cert),
        "client_key": _key_pem(client_key),
        "stranger_cert": _pem(stranger_cert),
        "stranger_key": _key_pem(stranger_key),
    }
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return Pki(**paths)


def _certificate(
    common_name: str,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    issuer_cert: x509.Certificate | None,
    *,
    ca: bool = False,
    server: bool = False,
    sans: list[str] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
