"""Object-store chores: ``weights mirror``, ``mirror prune`` and ``dataset upload``.

- ``rfdetr-pipeline weights mirror --size nano [--from-file X | --from-url [URL]]`` seeds the
  weights mirror the pipeline fine-tunes from (:mod:`pipelines.steps.weights`), once, MD5-checked
  against upstream's table (:data:`rfdetr.hub.PRETRAINED`).
- ``rfdetr-pipeline mirror prune --older-than 7d`` deletes checkpoint mirrors of runs whose
  newest object is older than that (failed runs leave their resume files behind).
- ``rfdetr-pipeline dataset upload FOLDER URI`` uploads a dataset with its ``manifest.json``,
  which the pipeline needs to pin it.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pipelines.cli import Subparsers
from rfdetr.errors import UserError
from rfdetr.hub import WEIGHTS_BASE_URL_ENV, PretrainedAsset

DEFAULT_MIRROR_ROOT = "s3://mlpipeline/rfdetr/checkpoint-mirror"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_parser(subparsers: Subparsers) -> None:
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
        default=None,
        help="download it (default: $RFDETR_WEIGHTS_BASE_URL/<file>, else upstream's URL)",
    )
    weights.add_argument("--uri", default=None, help="mirror prefix (default $RFDETR_WEIGHTS_URI)")
    mirror = _chore(
        subparsers,
        "mirror prune",
        _prune,
        "delete old checkpoint mirrors (failed runs' resume files)",
        "prune: delete the run folders under the checkpoint-mirror prefix whose newest object is "
        "older than --older-than.",
    )
    mirror.add_argument("--older-than", required=True, help="age: 7d, 12h, 2w, 90m, 30s")
    mirror.add_argument("--uri", default=DEFAULT_MIRROR_ROOT, help="checkpoint_mirror_uri")
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


def parse_age(text: str) -> timedelta:
    """``7d`` -> 7 days (units s, m, h, d, w)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match is None:
        raise UserError(f"--older-than {text!r}: expected a number and a unit s/m/h/d/w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _weights(args: argparse.Namespace) -> int:
    from pipelines.steps.weights import weights_prefix
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
            url = args.from_url or _default_url(asset)
            local = Path(tmp, asset.filename)
            try:
                hub.download_verified(url, local, md5=asset.md5)
            except (OSError, ValueError) as err:
                raise UserError(f"could not download {url}: {err}", 1) from None
        upload_file(local, target)
    print(f"mirrored the official {asset.name} weights (MD5 {asset.md5}) to {target}")
    return 0


def _default_url(asset: PretrainedAsset) -> str:
    base = os.environ.get(WEIGHTS_BASE_URL_ENV)
    return f"{base.rstrip('/')}/{asset.filename}" if base else asset.url


def _prune(args: argparse.Namespace) -> int:
    from pipelines.steps.mirror import prune

    age = parse_age(args.older_than)
    removed = prune(args.uri, age, dry_run=args.dry_run)
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
