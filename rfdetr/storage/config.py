"""The object-store connection, configured only from environment variables.

Variable names follow Kubeflow Pipelines (first match wins):

==============  ==========================================================================
endpoint        ``OBJECTSTORECONFIG_HOST`` [+ ``OBJECTSTORECONFIG_PORT``] (KFP API server), else
                ``MINIO_SERVICE_SERVICE_HOST`` + ``MINIO_SERVICE_SERVICE_PORT`` (what Kubernetes
                injects for KFP's ``minio-service``; the KFP launcher reads them). The host may be
                a URL (``http://127.0.0.1:9000``); its scheme then sets TLS.
access key      ``OBJECTSTORECONFIG_ACCESSKEY``, else ``AWS_ACCESS_KEY_ID`` (KFP maps the
                ``accesskey`` of secret ``mlpipeline-minio-artifact`` to it)
secret key      ``OBJECTSTORECONFIG_SECRETACCESSKEY``, else ``AWS_SECRET_ACCESS_KEY``
session token   ``AWS_SESSION_TOKEN`` (optional)
TLS             ``OBJECTSTORECONFIG_SECURE``, else ``MINIO_SERVICE_SECURE``: true/false; default
                false, as in KFP. CA bundle: ``SSL_CERT_FILE`` (read by the minio client).
region          ``OBJECTSTORECONFIG_REGION``, ``MINIO_SERVICE_REGION``, ``AWS_REGION`` or
                ``AWS_DEFAULT_REGION`` (optional; without it the client asks the server)
==============  ==========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rfdetr.storage.errors import (
    BucketNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageAuthError,
    StorageConfigError,
    StorageError,
    StorageServerError,
    StorageUnavailableError,
)

if TYPE_CHECKING:
    from minio import Minio

    from rfdetr.storage.uris import ObjectURI

HOST_VARS = ("OBJECTSTORECONFIG_HOST", "MINIO_SERVICE_SERVICE_HOST")
KEY_VARS = (
    ("OBJECTSTORECONFIG_ACCESSKEY", "OBJECTSTORECONFIG_SECRETACCESSKEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
)
SECURE_VARS = ("OBJECTSTORECONFIG_SECURE", "MINIO_SERVICE_SECURE")
REGION_VARS = (
    "OBJECTSTORECONFIG_REGION",
    "MINIO_SERVICE_REGION",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
START_HINT = "start a local one with `rfdetr-pipeline objectstore start`"
BUCKET_HINT = "`rfdetr-pipeline objectstore start --bucket NAME` does for the local store"

# Fail fast on a dead endpoint (urllib3's minio default is 5 min per attempt) but keep long
# reads of big objects alive; transient 5xx answers are retried with backoff.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0
RETRIES = 3
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class StoreConfig:
    """Resolved connection settings; secrets are kept out of ``repr``."""

    endpoint: str  # host[:port]
    secure: bool
    region: str | None
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``http(s)://host[:port]``, for messages."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise StorageConfigError(f"environment variable {name}={value!r}: expected true or false")


def _endpoint(env: Mapping[str, str]) -> tuple[str, bool | None]:
    """(host[:port], TLS from a URL scheme or None)."""
    found = _first(env, HOST_VARS)
    if found is None:
        raise StorageConfigError(
            "no object-store endpoint: set OBJECTSTORECONFIG_HOST (and OBJECTSTORECONFIG_PORT), "
            f"or {START_HINT} and eval its `objectstore env` output"
        )
    name, host = found
    port_var = name.replace("_HOST", "_PORT")  # OBJECTSTORECONFIG_PORT, MINIO_SERVICE_SERVICE_PORT
    scheme_secure: bool | None = None
    if "://" in host:
        parts = urlsplit(host)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise StorageConfigError(
                f"environment variable {name}={host!r}: expected host, host:port or http(s)://host:port"
            )
        scheme_secure = parts.scheme == "https"
        host = parts.netloc
    port = env.get(port_var, "").strip()
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise StorageConfigError(
                f"environment variable {port_var}={port!r}: expected a TCP port number"
            )
        if ":" in host.rsplit("]", 1)[-1]:
            raise StorageConfigError(
                f"{name}={host!r} already has a port; unset {port_var}={port!r} or drop one"
            )
        host = f"{host}:{port}"
    return host, scheme_secure


def keys_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(access key, secret key) from the first variable pair that is set, or None."""
    env = os.environ if env is None else env
    for access_var, secret_var in KEY_VARS:
        access = env.get(access_var, "").strip()
        if access:
            secret = env.get(secret_var, "").strip()
            if not secret:
                raise StorageConfigError(f"{access_var} is set but {secret_var} is not; set both")
            return access, secret
    return None


def config_from_env(env: Mapping[str, str] | None = None) -> StoreConfig:
    """Read :class:`StoreConfig` from ``env`` (default ``os.environ``); one-line errors."""
    env = os.environ if env is None else env
    endpoint, scheme_secure = _endpoint(env)
    secure_var = _first(env, SECURE_VARS)
    secure = _parse_bool(*secure_var) if secure_var else bool(scheme_secure)
    if secure_var and scheme_secure is not None and secure != scheme_secure:
        raise StorageConfigError(
            f"{secure_var[0]}={secure_var[1]!r} contradicts the endpoint's URL scheme"
        )
    keys = keys_from_env(env)
    if keys is None:
        raise StorageConfigError(
            "no object-store credentials: set OBJECTSTORECONFIG_ACCESSKEY and "
            "OBJECTSTORECONFIG_SECRETACCESSKEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    region = _first(env, REGION_VARS)
    token = env.get("AWS_SESSION_TOKEN", "").strip() or None
    return StoreConfig(endpoint, secure, region[1] if region else None, *keys, session_token=token)


@dataclass(frozen=True)
class ObjectStore:
    """A connected minio client plus the endpoint URL used in messages."""

    client: Minio
    url: str

    @classmethod
    def from_env(cls) -> ObjectStore:
        """Connect with :func:`config_from_env` (no network traffic until the first request)."""
        return cls.from_config(config_from_env())

    @classmethod
    def from_config(cls, config: StoreConfig) -> ObjectStore:
        """Connect with explicit settings (the local store manager uses its own keys)."""
        try:
            import certifi
            import urllib3
            from minio import Minio
        except ImportError as exc:  # the optional extra is missing
            raise StorageConfigError(
                f"object storage needs the 'minio' package ({exc}); pip install 'rfdetr[pipeline]'"
            ) from None
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=RETRIES, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]
            ),
        )
        client = Minio(
            config.endpoint,
            access_key=config.access_key,
            secret_key=config.secret_key,
            session_token=config.session_token,
            secure=config.secure,
            region=config.region,
            http_client=http,
        )
        return cls(client, config.url)


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _retried_status(reason: object) -> str | None:
    """The HTTP status when urllib3 gave up retrying a 5xx answer, else None (no answer): urllib3
    2.x ``util/retry.py`` ``Retry.increment`` raises ``MaxRetryError(reason=ResponseError(
    SPECIFIC_ERROR.format(status_code=...)))``, or ``GENERIC_ERROR`` without a status."""
    from urllib3.exceptions import ResponseError

    if not isinstance(reason, ResponseError):
        return None
    head, _, tail = ResponseError.SPECIFIC_ERROR.partition("{status_code}")
    text = str(reason)
    found = text.startswith(head) and text.endswith(tail)
    return (found and text[len(head) : len(text) - len(tail)]) or "5xx"


@contextmanager
def s3_errors(store: ObjectStore, action: str, target: object) -> Iterator[None]:
    """Translate minio / urllib3 exceptions raised inside into one-line :class:`StorageError` s."""
    from minio.error import MinioException, S3Error
    from urllib3.exceptions import HTTPError

    try:
        yield
    except S3Error as exc:
        where = f"{action} {target}"
        if exc.code == "NoSuchBucket":
            raise BucketNotFoundError(
                f"{where}: bucket {exc.bucket_name or ''!r} does not exist at {store.url}; "
                f"create it ({BUCKET_HINT})"
            ) from None
        if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
            raise ObjectNotFoundError(f"{where}: no such object at {store.url}") from None
        if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):  # 412; 409: AWS race
            raise PreconditionFailedError(f"{target}: {exc.code}") from None
        if exc.code in _AUTH_CODES:
            raise StorageAuthError(
                f"{where}: {store.url} rejected the request ({exc.code}); check the keys in "
                "OBJECTSTORECONFIG_ACCESSKEY/SECRETACCESSKEY or AWS_ACCESS_KEY_ID/SECRET_ACCESS_KEY"
            ) from None
        raise StorageError(
            f"{where} failed at {store.url}: {exc.code}: {_first_line(exc.message)}"
        ) from None
    except MinioException as exc:  # ServerError, InvalidResponseError: not an S3 answer
        raise StorageError(
            f"{action} {target}: unexpected answer from {store.url}: {_first_line(exc)}"
        ) from None
    except HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        status = _retried_status(reason)
        if status is not None:
            raise StorageServerError(
                f"{action} {target}: the object store at {store.url} answered HTTP {status} "
                f"(server error) to all {RETRIES + 1} tries; is its disk full? see its log"
            ) from None
        raise StorageUnavailableError(
            f"{action} {target}: cannot reach the object store at {store.url} "
            f"({_first_line(reason)}); check OBJECTSTORECONFIG_HOST/PORT/SECURE or {START_HINT}"
        ) from None


@contextmanager
def open_object(store: ObjectStore, target: ObjectURI, action: str) -> Iterator[Any]:
    """The GET response of ``target`` under :func:`s3_errors`, released after the block."""
    with s3_errors(store, action, target):
        response = store.client.get_object(target.bucket, target.key)
        try:
            yield response
        finally:
            response.close()
            response.release_conn()
