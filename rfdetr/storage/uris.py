"""Object-store URIs (``s3://bucket/prefix``, ``minio://bucket/prefix``) and safe relative keys.

``minio://`` is the scheme Kubeflow Pipelines uses for its default artifact store; both schemes
address the single endpoint configured in the environment (see :mod:`rfdetr.storage.config`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from dataclasses import dataclass

from rfdetr.storage.errors import InvalidURIError, UnsafeKeyError

SCHEMES: tuple[str, ...] = ("s3", "minio")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_EXAMPLE = "expected s3://bucket/prefix or minio://bucket/prefix"


@dataclass(frozen=True)
class ObjectURI:
    """A parsed object-store location.

    ``key`` has no leading or trailing ``/``; it is ``""`` for the bucket root. As a prefix it
    means "everything under ``key/``" (so ``s3://b/data`` never matches ``s3://b/data2/x``).
    """

    scheme: str
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}" + (f"/{self.key}" if self.key else "")

    @property
    def prefix(self) -> str:
        """The listing prefix: ``key + "/"``, or ``""`` for the bucket root."""
        return f"{self.key}/" if self.key else ""

    @property
    def name(self) -> str:
        """The last segment of the key (``""`` for the bucket root)."""
        return self.key.rsplit("/", 1)[-1]

    def child(self, relative: str) -> ObjectURI:
        """The URI of ``relative`` (a ``/``-separated safe relative path) under this prefix."""
        rel = safe_relative_path(relative, context=str(self))
        return ObjectURI(self.scheme, self.bucket, f"{self.prefix}{rel}")


def is_object_uri(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` looks like an object-store URI (a scheme we handle) rather than a path."""
    match = _SCHEME_RE.match(os.fspath(value))
    return bool(match) and match.group(1).lower() in SCHEMES


def parse_uri(uri: str | ObjectURI) -> ObjectURI:
    """Parse ``s3://bucket/prefix`` or ``minio://bucket/prefix``.

    Raises :class:`InvalidURIError` (one line) for another scheme, a bad bucket name, a query
    string or fragment, or a key with empty, ``.`` or ``..`` segments or control characters.
    """
    if isinstance(uri, ObjectURI):
        return uri
    text = str(uri)
    match = _SCHEME_RE.match(text)
    if match is None:
        raise InvalidURIError(f"{text!r} is not an object-store URI; {_EXAMPLE}")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in SCHEMES:
        raise InvalidURIError(f"{text!r}: unsupported scheme {scheme!r}; {_EXAMPLE}")
    if "?" in rest or "#" in rest:
        raise InvalidURIError(
            f"{text!r}: query strings and fragments are not supported; {_EXAMPLE}"
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidURIError(f"{text!r}: no bucket name; {_EXAMPLE}")
    problem = bucket_name_problem(bucket)
    if problem:
        raise InvalidURIError(f"{text!r}: invalid bucket name {bucket!r} (S3 rule: {problem})")
    key = key.removesuffix("/")
    if key:
        try:
            _check_segments(key)
        except ValueError as exc:
            raise InvalidURIError(f"{text!r}: {exc}") from None
    return ObjectURI(scheme, bucket, key)


# Reserved by AWS (general purpose bucket naming rules, docs.aws.amazon.com/AmazonS3/latest/
# userguide/bucketnamingrules.html): access-point aliases, Outposts, MRAP, directory buckets.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(bucket: str) -> str | None:
    """Which S3 bucket naming rule ``bucket`` breaks, or None when it is a valid name."""
    if not _BUCKET_RE.match(bucket):
        return (
            "3-63 characters of lowercase letters, digits, '.' and '-', alphanumeric at both ends"
        )
    if ".." in bucket:
        return "no two adjacent dots"
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(bucket)
        return "not an IP address"
    if bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        return f"no reserved prefix {_RESERVED_PREFIXES} or suffix {_RESERVED_SUFFIXES}"
    return None


def check_bucket_name(bucket: str, what: str = "bucket") -> str:
    """``bucket`` when it is a valid S3 bucket name (``a/b`` is not), else
    :class:`InvalidURIError` naming ``what``."""
    problem = bucket_name_problem(bucket)
    if problem:
        raise InvalidURIError(f"{what} {bucket!r}: not a bucket name (S3 rule: {problem})")
    return bucket


def _check_segments(path: str) -> None:
    """Raise ValueError when ``path`` is not a clean relative ``/``-separated path."""
    if _CONTROL_RE.search(path):
        raise ValueError("control characters are not allowed in object keys")
    if path.startswith("/"):
        raise ValueError("absolute keys ('/...') are not allowed")
    if "\\" in path:
        raise ValueError("backslashes are not allowed in object keys")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            shown = "an empty segment ('//')" if not segment else f"a {segment!r} segment"
            raise ValueError(f"the key has {shown}")


def safe_relative_path(relative: str, *, context: str = "") -> str:
    """``relative`` when it is safe to join under a local folder (non-empty, relative, no empty,
    ``.`` or ``..`` segment, no backslash or control character), else UnsafeKeyError."""
    try:
        if not relative:
            raise ValueError("the key is empty")
        _check_segments(relative)
    except ValueError as exc:
        where = f"{context}: " if context else ""
        raise UnsafeKeyError(f"{where}refusing key {relative!r}: {exc}") from None
    return relative


def relative_key(prefix: ObjectURI, key: str) -> str:
    """Path of object ``key`` relative to ``prefix``, checked by :func:`safe_relative_path`."""
    if not key.startswith(prefix.prefix):
        raise UnsafeKeyError(f"{prefix}: refusing key {key!r}: it is not under the prefix")
    return safe_relative_path(key[len(prefix.prefix) :], context=str(prefix))
