"""Pretrained weights: cache, download, checksum, failures. Only 127.0.0.1 is contacted."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rfdetr import hub
from rfdetr.hub import (
    PRETRAINED,
    PretrainedAsset,
    WeightsUnavailableError,
    default_cache_dir,
    find_pretrained,
    resolve_pretrained,
)

PAYLOAD = b"not really weights, but bytes with a known checksum\n" * 100
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class FileServer:
    """A local HTTP server: path -> body; ``/short/...`` promises more bytes than it sends."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    base: str = ""


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            body = state.files.get(self.path.removeprefix("/short"))
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            extra = 1000 if self.path.startswith("/short") else 0
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def asset(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> PretrainedAsset:
    """A published-like entry 'tiny-test' served by the local server."""
    server.files["/weights/tiny.pth"] = PAYLOAD
    entry = PretrainedAsset(
        "tiny-test", "rf-detr-tiny.pth", f"{server.base}/weights/tiny.pth", PAYLOAD_MD5
    )
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    monkeypatch.delenv(hub.WEIGHTS_BASE_URL_ENV, raising=False)
    return entry


def one_line(err: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def test_registry_has_every_public_size() -> None:
    expected = {
        "nano", "small", "medium", "large", "base",
        "seg-nano", "seg-small", "seg-medium", "seg-large", "seg-xlarge", "seg-2xlarge",
    }  # fmt: skip
    assert set(PRETRAINED) == expected
    filenames = [a.filename for a in PRETRAINED.values()]
    assert len(set(filenames)) == len(filenames)
    for a in PRETRAINED.values():
        assert a.url.startswith("https://storage.googleapis.com/rfdetr/")
        assert len(a.md5) == 32 and int(a.md5, 16) >= 0
    assert find_pretrained("rf-detr-medium.pth") is PRETRAINED["medium"]
    assert find_pretrained("rf-detr-seg-xxlarge.pt") is PRETRAINED["seg-2xlarge"]
    assert find_pretrained("huge") is None


def test_existing_path_is_returned_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    path.write_bytes(b"x")
    assert resolve_pretrained(path, cache_dir=tmp_path / "cache") == path
    assert not (tmp_path / "cache").exists()


def test_unknown_name_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        resolve_pretrained("rf-detr-huge.pth", cache_dir=tmp_path)
    one_line(err, "rf-detr-huge.pth", "medium", "pretrain_weights=None")


def test_download_is_verified_cached_and_reused(
    tmp_path: Path, server: FileServer, asset: PretrainedAsset
) -> None:
    cache = tmp_path / "cache"
    first = resolve_pretrained("tiny-test", cache_dir=cache)
    assert first == cache / "rf-detr-tiny.pth" and first.read_bytes() == PAYLOAD
    assert server.hits == ["/weights/tiny.pth"]
    assert resolve_pretrained("rf-detr-tiny.pth", cache_dir=cache) == first  # upstream name too
    assert server.hits == ["/weights/tiny.pth"]  # second call served from the cache
    assert [p.name for p in cache.iterdir()] == ["rf-detr-tiny.pth"]  # no partial file left


def test_cache_dir_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asset: PretrainedAsset
) -> None:
    monkeypatch.setenv(hub.CACHE_DIR_ENV, str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    assert resolve_pretrained("tiny-test") == tmp_path / "env-cache" / "rf-detr-tiny.pth"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.CACHE_DIR_ENV, raising=False)
    assert default_cache_dir() == Path("~/.cache/rfdetr").expanduser()


def test_mirror_base_url_from_environment(
    tmp_path: Path, server: FileServer, asset: PretrainedAsset, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/mirror/rf-detr-tiny.pth"] = PAYLOAD
    monkeypatch.setenv(hub.WEIGHTS_BASE_URL_ENV, f"{server.base}/mirror/")
    resolve_pretrained("tiny-test", cache_dir=tmp_path)
    assert server.hits == ["/mirror/rf-detr-tiny.pth"]


def test_url_override(tmp_path: Path, server: FileServer, asset: PretrainedAsset) -> None:
    server.files["/elsewhere.bin"] = PAYLOAD
    resolve_pretrained("tiny-test", cache_dir=tmp_path, url_override=f"{server.base}/elsewhere.bin")
    assert server.hits == ["/elsewhere.bin"]


def test_wrong_checksum_keeps_nothing_and_says_what_to_do(
    tmp_path: Path, server: FileServer, asset: PretrainedAsset
) -> None:
    server.files["/weights/tiny.pth"] = PAYLOAD[:-1] + b"!"
    cache = tmp_path / "cache"
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_pretrained("tiny-test", cache_dir=cache)
    one_line(
        err,
        "checksum mismatch",
        "pretrain_weights=PATH",
        "pretrain_weights=None",
        asset.url,
        str(cache / "rf-detr-tiny.pth"),
        PAYLOAD_MD5,
    )
    assert list(cache.iterdir()) == []


def test_http_404(tmp_path: Path, server: FileServer, asset: PretrainedAsset) -> None:
    del server.files["/weights/tiny.pth"]
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_pretrained("tiny-test", cache_dir=tmp_path)
    one_line(err, "HTTP 404", "pretrain_weights=PATH", "pretrain_weights=None")
    assert list(tmp_path.iterdir()) == []


def test_connection_closed_early(
    tmp_path: Path, server: FileServer, asset: PretrainedAsset
) -> None:
    url = f"{server.base}/short/weights/tiny.pth"
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_pretrained("tiny-test", cache_dir=tmp_path, url_override=url)
    one_line(err, "pretrain_weights=None")
    assert list(tmp_path.iterdir()) == []


def test_closed_port(tmp_path: Path, asset: PretrainedAsset) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights/tiny.pth"
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_pretrained("tiny-test", cache_dir=tmp_path, url_override=url)
    one_line(err, "network error", url, "pretrain_weights=PATH", "pretrain_weights=None")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_file_is_reported_not_used(
    tmp_path: Path, server: FileServer, asset: PretrainedAsset
) -> None:
    (tmp_path / "rf-detr-tiny.pth").write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_pretrained("tiny-test", cache_dir=tmp_path)
    one_line(err, "corrupt", "delete", "pretrain_weights=None")
    assert server.hits == []


def test_unsupported_scheme(tmp_path: Path, asset: PretrainedAsset) -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_pretrained("tiny-test", cache_dir=tmp_path, url_override="ftp://example/x.pth")
    one_line(err, "unsupported URL scheme")
