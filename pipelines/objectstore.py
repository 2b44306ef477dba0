"""Object-store commands: the local store (``objectstore start|stop|status|env``, see
:mod:`pipelines.seaweedfs`) and chores on any store (``weights mirror``, ``mirror prune``,
``dataset upload``); each one's ``--help`` says what it does.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from pipelines import seaweedfs
from pipelines.cli import Subparsers, duration_s
from pipelines.parameters import DEFAULTS
from pipelines.seaweedfs import ServerInfo
from rfdetr.errors import EXIT_FAILED, UserError


def add_parser(subparsers: Subparsers) -> None:
    _add_objectstore(subparsers)
    weights = _chore(
        subparsers,
        "weights mirror",
        _weights,
        "seed the object store with the official COCO weights (for air-gapped clusters)",
        "mirror: put the official checkpoint of a size into the weights mirror "
        "($RFDETR_WEIGHTS_URI, default s3://mlpipeline/rfdetr-weights), MD5-checked.",
    )
    weights.add_argument("--size", required=True, help="model size, e.g. nano, medium, seg-large")
    source = weights.add_mutually_exclusive_group()
    source.add_argument("--from-file", type=Path, help="a downloaded copy of the official file")
    source.add_argument(
        "--from-url",
        nargs="?",
        const="",
        help="download it (default: $RFDETR_WEIGHTS_BASE_URL/<file>, else upstream's URL)",
    )
    weights.add_argument("--uri", help="mirror prefix (default $RFDETR_WEIGHTS_URI)")
    mirror = _chore(
        subparsers,
        "mirror prune",
        _prune,
        "delete old checkpoint mirrors (failed runs' resume files)",
        "prune: delete the run folders under the checkpoint-mirror prefix whose newest object is "
        "older than --older-than.",
    )
    mirror.add_argument("--older-than", required=True, help="age: 7d, 12h, 2w, 90m, 30s")
    mirror.add_argument(
        "--uri", default=DEFAULTS["checkpoint_mirror_uri"], help="checkpoint_mirror_uri"
    )
    mirror.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    dataset = _chore(
        subparsers,
        "dataset upload",
        _upload,
        "upload a dataset folder with its manifest.json",
        "upload: every file, verified, then manifest.json (sha256 of each file).",
    )
    dataset.add_argument("folder", type=Path)
    dataset.add_argument("uri", help="s3://bucket/prefix")


def _chore(
    subparsers: Subparsers,
    command: str,
    handler: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """The sub-command ``NOUN VERB`` (``command``), e.g. ``mirror prune``, run by ``handler``."""
    noun, verb = command.split()
    parser = subparsers.add_parser(noun, help=help, description=description)
    parser.add_argument("action", choices=(verb,))
    parser.set_defaults(handler=handler)
    return parser


def _weights(args: argparse.Namespace) -> int:
    from pipelines.steps.weights import base_url_of, weights_prefix
    from rfdetr import hub
    from rfdetr.storage import parse_uri, upload_file

    asset = hub.PRETRAINED.get(args.size)
    if asset is None:
        raise UserError(
            f"--size {args.size!r}: no official weights (known: {', '.join(hub.PRETRAINED)})"
        )
    target = parse_uri(args.uri or weights_prefix()).child(asset.filename)
    with tempfile.TemporaryDirectory(prefix="rfdetr-weights-") as tmp:
        if args.from_file is not None:
            local = args.from_file
            if not local.is_file():
                raise UserError(f"{local}: no such file")
            digest = hub.md5_of(local)
            if digest != asset.md5:
                raise UserError(
                    f"{local}: MD5 {digest} is not the official {asset.name} file's {asset.md5}"
                )
        else:
            url = args.from_url or base_url_of(asset) or asset.url
            local = Path(tmp, asset.filename)
            try:
                hub.download_verified(url, local, md5=asset.md5)
            except (OSError, ValueError) as err:
                raise UserError(f"could not download {url}: {err}", 1) from None
        upload_file(local, target)
    print(f"mirrored the official {asset.name} weights (MD5 {asset.md5}) to {target}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from pipelines.steps.mirror import prune

    seconds = duration_s(args.older_than)
    if seconds is None or args.older_than.strip()[-1:].isdigit():  # a unit is required: it deletes
        raise UserError(f"--older-than {args.older_than!r}: expected a number and a unit s/m/h/d/w")
    removed = prune(args.uri, timedelta(seconds=seconds), dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for uri in removed:
        print(f"{verb} {uri}")
    print(f"{verb} {len(removed)} run mirror(s) older than {args.older_than} under {args.uri}")
    return 0


def _upload(args: argparse.Namespace) -> int:
    from rfdetr.storage import upload_dir

    if not args.folder.is_dir():
        raise UserError(f"{args.folder}: not a folder")
    manifest = upload_dir(args.folder, args.uri)
    print(f"uploaded {len(manifest.files)} files, {manifest.total_bytes} bytes, to {args.uri}")
    return 0


def _add_objectstore(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "objectstore",
        help="run a local S3 object store (SeaweedFS) on 127.0.0.1",
        description=(
            "start: launch SeaweedFS on 127.0.0.1 (keys from OBJECTSTORECONFIG_ACCESSKEY/"
            "SECRETACCESSKEY or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else a generated "
            "local-only pair in DATA_DIR/credentials.json), wait until it answers and create the "
            "buckets; stop: stop it by PID; status: print endpoint and buckets (exit 1 when not "
            "running); env: print the shell exports clients need (with AWS_ENDPOINT_URL and "
            "AWS_* keys for aws/boto3): "
            'eval "$(rfdetr-pipeline objectstore env)".'
        ),
    )
    parser.add_argument("action", choices=("start", "stop", "status", "env"), help="what to do")
    data_help = "data folder (default: $RFDETR_OBJECTSTORE_DIR or ./.objectstore)"
    parser.add_argument("--data-dir", type=Path, help=data_help)
    parser.add_argument(
        "--port", type=int, help="S3 API port (default: $RFDETR_OBJECTSTORE_PORT or 9000)"
    )
    bucket_help = (
        "bucket to create at start (repeatable; default: mlpipeline, KFP's artifact bucket)"
    )
    parser.add_argument("--bucket", action="append", help=bucket_help)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait at start/stop")
    parser.set_defaults(handler=_objectstore)


def _objectstore(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected a TCP port number")
    data_dir = args.data_dir.absolute() if args.data_dir else seaweedfs.default_data_dir()
    if args.action == "start":
        buckets = tuple(args.bucket or seaweedfs.DEFAULT_BUCKETS)
        info = seaweedfs.start(data_dir, args.port, buckets, timeout=args.timeout)
        _print_info(info, info.buckets)
        default = data_dir == seaweedfs.default_data_dir()
        where = "" if default else f" --data-dir {shlex.quote(str(data_dir))}"
        print(f'clients: eval "$(rfdetr-pipeline objectstore env{where})"')
        return 0
    if args.action == "stop":
        stopped = seaweedfs.stop(data_dir, timeout=args.timeout)
        print(f"stopped the object store in {data_dir}" if stopped else f"not running ({data_dir})")
        return 0
    info = seaweedfs.status(data_dir)
    if info is None:
        # env's stdout goes to `eval`: the message must not land there
        print(f"not running ({data_dir})", file=sys.stderr if args.action == "env" else None)
        return EXIT_FAILED
    if args.action == "env":
        lines = [f"export {k}={shlex.quote(v)}" for k, v in seaweedfs.client_env(info).items()]
        if info.credentials_source == "environment":  # the endpoint's 4 names, not the user's keys
            lines[4:] = ["# keys: the server uses the ones already in your environment"]
        print("\n".join(lines))
    else:
        _print_info(info, _live_buckets(info))
    return 0


def _live_buckets(info: ServerInfo) -> list[str]:
    from rfdetr.storage import ObjectStore
    from rfdetr.storage.config import s3_errors

    store = ObjectStore.from_config(seaweedfs.store_config(info))
    with s3_errors(store, "listing buckets of", store.url):
        return sorted(bucket.name for bucket in store.client.list_buckets())


def _print_info(info: ServerInfo, shown: Sequence[str]) -> None:
    print(f"endpoint: {info.url}")
    print(f"pid:      {info.pid}")
    print(f"data:     {info.data_dir}")
    print(f"keys:     {info.credentials_source}")
    print(f"buckets:  {', '.join(shown) or '(none)'}")
