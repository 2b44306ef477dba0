"""``rfdetr-pipeline objectstore start|stop|status|env``: the local SeaweedFS S3 store.

See :mod:`pipelines.seaweedfs` for where data and keys live.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pipelines import seaweedfs
from pipelines.cli import Subparsers
from pipelines.seaweedfs import ServerInfo
from rfdetr.errors import EXIT_FAILED, UserError
from rfdetr.storage.config import StoreConfig

_ACTIONS = ("start", "stop", "status", "env")


def add_parser(subparsers: Subparsers) -> None:
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
    parser.add_argument("action", choices=_ACTIONS, help="what to do")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data folder (default: $RFDETR_OBJECTSTORE_DIR or ./.objectstore)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="S3 API port (default: $RFDETR_OBJECTSTORE_PORT or 9000)",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=None,
        help="bucket to create at start (repeatable; default: mlpipeline, KFP's artifact bucket)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait at start/stop")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected a TCP port number")
    data_dir = args.data_dir.absolute() if args.data_dir else seaweedfs.default_data_dir()
    if args.action == "start":
        buckets = tuple(args.bucket or seaweedfs.DEFAULT_BUCKETS)
        info = seaweedfs.start(data_dir, args.port, buckets, timeout=args.timeout)
        _print_info(info)
        print('clients: eval "$(rfdetr-pipeline objectstore env)"')
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
        print(_exports(info, seaweedfs.store_config(info)))
    else:
        _print_info(info, _live_buckets(info))
    return 0


def _live_buckets(info: ServerInfo) -> list[str]:
    from rfdetr.storage import ObjectStore
    from rfdetr.storage.config import s3_errors

    store = ObjectStore.from_config(seaweedfs.store_config(info))
    with s3_errors(store, "listing buckets of", store.url):
        return sorted(bucket.name for bucket in store.client.list_buckets())


def _print_info(info: ServerInfo, buckets: list[str] | None = None) -> None:
    shown = buckets if buckets is not None else list(info.buckets)
    print(f"endpoint: {info.url}")
    print(f"pid:      {info.pid}")
    print(f"data:     {info.data_dir}")
    print(f"keys:     {info.credentials_source}")
    print(f"buckets:  {', '.join(shown) or '(none)'}")


def _exports(info: ServerInfo, config: StoreConfig) -> str:
    lines = [
        f"export OBJECTSTORECONFIG_HOST={info.endpoint.split(':')[0]}",
        f"export OBJECTSTORECONFIG_PORT={info.port}",
        "export OBJECTSTORECONFIG_SECURE=false",
        f"export AWS_ENDPOINT_URL={info.url}",  # for aws / boto3 as they are
    ]
    if info.credentials_source == "environment":
        lines.append("# keys: the server uses the ones already in your environment")
    else:
        access, secret = shlex.quote(config.access_key), shlex.quote(config.secret_key)
        lines += [
            f"export OBJECTSTORECONFIG_ACCESSKEY={access}",
            f"export OBJECTSTORECONFIG_SECRETACCESSKEY={secret}",
            f"export AWS_ACCESS_KEY_ID={access}",
            f"export AWS_SECRET_ACCESS_KEY={secret}",
        ]
    return "\n".join(lines)
