"""A store that answers with server errors is not reported as unreachable (issue 13: a full disk
read "cannot reach the object store (too many 500 error responses)").

The stand-in answers every request with HTTP 500, as SeaweedFS's S3 gateway does when its volume
cannot take a write (measured in issue 13 with a full disk) or after its data was deleted under
it. urllib3 retries a 500 (``status_forcelist`` in ``rfdetr/storage/config.py``
``ObjectStore.from_config``), then gives up with
``MaxRetryError(ResponseError("too many 500 error responses"))``
(urllib3 2.x ``util/retry.py``, ``Retry.increment``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rfdetr import storage
from rfdetr.storage import StorageServerError, StorageUnavailableError
from rfdetr.storage.config import RETRIES


class _Failing(BaseHTTPRequestHandler):
    requests = 0

    def _fail(self) -> None:
        type(self).requests += 1
        body = b"<Error><Code>InternalError</Code><Message>disk full</Message></Error>"
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = _fail

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        return None


@pytest.fixture
def failing_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Failing]]:
    """A local HTTP server that answers 500 to everything; the client environment points at it."""
    handler = type("Failing", (_Failing,), {"requests": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name, value in {
        "OBJECTSTORECONFIG_HOST": "127.0.0.1",
        "OBJECTSTORECONFIG_PORT": str(server.server_address[1]),
        "OBJECTSTORECONFIG_SECURE": "false",
        "OBJECTSTORECONFIG_REGION": "us-east-1",
        "OBJECTSTORECONFIG_ACCESSKEY": "standin-key",
        "OBJECTSTORECONFIG_SECRETACCESSKEY": "standin-secret",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_store_answering_500_is_a_server_error_not_unreachable(
    failing_store: type[_Failing],
) -> None:
    with pytest.raises(StorageServerError) as info:
        storage.read_bytes("s3://mlpipeline/x.bin")
    message = str(info.value)
    assert "\n" not in message
    assert "HTTP 500" in message and "disk full?" in message
    assert "cannot reach" not in message
    assert failing_store.requests == RETRIES + 1  # the server did answer, every time


def test_a_refused_connection_still_says_cannot_reach(
    failing_store: type[_Failing], monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("OBJECTSTORECONFIG_PORT", str(closed_port))
    with pytest.raises(StorageUnavailableError, match="cannot reach the object store") as info:
        storage.read_bytes("s3://mlpipeline/x.bin")
    assert not isinstance(info.value, StorageServerError)
    assert failing_store.requests == 0
