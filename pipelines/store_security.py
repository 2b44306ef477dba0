"""Lock down the local SeaweedFS so objects are reachable only through S3 with the keys.

``security.toml`` (read from the data folder, the server's working folder) is written at every
start, mode 0600, with fresh keys and certificates: ``[jwt.signing]`` and ``[jwt.filer_signing]``
(+ ``.read``) make the volume server's and the filer's HTTP ports serve only requests with a token
the master hands out over gRPC; ``[grpc]`` makes every gRPC port demand a client certificate of a
private CA (mutual TLS; the CA's key is never written); ``[access] ui = false``.

The master's HTTP admin paths (``/col/delete?collection=<bucket>`` deletes a bucket's data,
``/dir/assign``, ``/vol/grow``, ...) are guarded only by an IP white list, which ``weed mini`` also
applies to its own unix-socket gRPC and loopback uploads: any list that lets the store work lets
every local user in. So the store runs with ``-disableHttp``: the master does not register them
(weed/server/master_server.go, ``if !ms.option.DisableHttp``). Still open without keys
(SeaweedFS 4.48, measured; read-only): status pages, ``/healthz``, the admin ``/metrics``. The
server runs with umask 077, so its files and unix sockets are its owner's only.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from pathlib import Path

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "node.crt", "node.key"
COMMON_NAME = "rfdetr-local-objectstore"
_GRPC_SERVICES = (
    "master",
    "volume",
    "filer",
    "s3",
    "admin",
    "worker",
    "msg_broker",
    "msg_agent",
    "mq",
)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new ``path`` of mode 0600 (never through an existing file)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _certificates(folder: Path) -> None:
    """A throw-away CA and one server-and-client certificate for 127.0.0.1, in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject: str, issuer: str, public_key: object) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
        )

    ca_key, node_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    ca_name = f"{COMMON_NAME}-ca"
    ca = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    node = (
        builder(COMMON_NAME, ca_name, node_key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    write_private(folder / CA_FILE, ca.public_bytes(pem))
    write_private(folder / CERT_FILE, node.public_bytes(pem))
    write_private(
        folder / KEY_FILE, node_key.private_bytes(pem, pkcs8, serialization.NoEncryption())
    )


def write_security_config(data_dir: Path) -> None:
    """Write ``data_dir/security.toml`` and ``data_dir/tls/`` (see the module docstring)."""
    tls = data_dir / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    _certificates(tls)
    ca, cert, key = (json.dumps(str(tls / name)) for name in (CA_FILE, CERT_FILE, KEY_FILE))
    lines = []
    for section in ("signing", "signing.read", "filer_signing", "filer_signing.read"):
        lines += [f"[jwt.{section}]", f'key = "{secrets.token_urlsafe(32)}"', ""]
    lines += ["[access]", "ui = false", "", "[grpc]", f"ca = {ca}", ""]
    for service in _GRPC_SERVICES:
        names = f'allowed_commonNames = "{COMMON_NAME}"'
        lines += [f"[grpc.{service}]", f"cert = {cert}", f"key = {key}", names, ""]
    lines += ["[grpc.client]", f"cert = {cert}", f"key = {key}", ""]
    write_private(data_dir / "security.toml", "\n".join(lines).encode())
