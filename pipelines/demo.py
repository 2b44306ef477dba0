"""``make demo``: the whole Kubeflow pipeline on this machine, end to end, on the CPU.

Starts a local object store (``.demo/objectstore``), uploads the dataset (``--dataset`` folder or
``s3://`` URI; default: generated shapes), runs the pipeline with ``kfp.local`` (publishing to
``s3://models/``), downloads and checks what was published, prints a summary and the bytes the
run moved, and stops the store unless it was running before.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines import seaweedfs

WORKDIR = Path(".demo")
DATASET_BUCKET = "datasets"
MODEL_BUCKET = "models"
DEMO_SPLITS = {"train": 128, "valid": 32, "test": 32}
# From-scratch training of the CPU-sized preset on the shapes data: a higher learning rate
# than the fine-tuning default, no accumulation, fixed-size batches.
TINY_OPTIONS = {"lr": 1e-3, "batch_size": 8, "grad_accum_steps": 1}
TINY_OVERRIDES = {"lr_encoder": 1.5e-3, "multi_scale": False}
_STORE_VARS = ("OBJECTSTORECONFIG_", "AWS_", "MINIO_SERVICE_")
_say = functools.partial(print, flush=True)  # each line shows at once, also behind a pipe


@contextlib.contextmanager
def object_store(data_dir: Path) -> Iterator[seaweedfs.ServerInfo]:
    """A running local store, its settings in ``os.environ``; stopped at the end if started here."""
    running = seaweedfs.status(data_dir)
    for name in [n for n in os.environ if n.startswith(_STORE_VARS)]:
        del os.environ[name]  # the demo's store and keys, never the user's
    port = seaweedfs.free_port(seaweedfs.DEFAULT_PORT)  # start() reuses a running server
    info = seaweedfs.start(data_dir, port, (DATASET_BUCKET, MODEL_BUCKET), tied=True)
    os.environ.update(seaweedfs.client_env(info))  # what `objectstore env` prints
    _say(f"object store: {info.url} (SeaweedFS, data in {data_dir})")
    try:
        yield info
    finally:
        if running is None:
            seaweedfs.stop(data_dir)
            restart = f"rfdetr-pipeline objectstore start --data-dir {data_dir}"
            _say(f"object store stopped (to look inside again: {restart})")


def dataset_uri(dataset: str, workdir: Path) -> str:
    """An ``s3://`` URI of the dataset on the demo store: generated and/or uploaded as needed."""
    from rfdetr.storage import is_object_uri, upload_dir

    if dataset and is_object_uri(dataset):
        return dataset
    if dataset:
        folder = Path(dataset).expanduser()
        if not folder.is_dir():
            raise SystemExit(f"demo: DATASET={dataset!r} is neither a folder nor an s3:// URI")
        name = folder.resolve().name
    else:
        from rfdetr.data.synthetic import make_shapes_dataset

        folder = workdir / "shapes"
        if not (folder / "train").is_dir():
            make_shapes_dataset(folder, splits=DEMO_SPLITS, image_size=64, seed=0)
        name = "shapes"
        _say(f"dataset: generated {sum(DEMO_SPLITS.values())} shapes images in {folder}")
    uri = f"s3://{DATASET_BUCKET}/{name}"
    manifest = upload_dir(folder, uri)
    _say(f"dataset: uploaded {len(manifest.files)} files to {uri} (verified, with manifest)")
    return uri


def pipeline_arguments(uri: str, model: str, epochs: int, generated: bool) -> dict:
    """The demo's pipeline parameters: CPU-friendly settings, publishing to the demo store."""
    args: dict = {"dataset_uri": uri, "model_size": model, "epochs": epochs}
    overrides: dict = {"num_workers": 0, "device": "cpu"}
    if model == "tiny" and generated:
        args, overrides = args | TINY_OPTIONS, overrides | TINY_OVERRIDES
    return args | {
        "overrides": overrides,
        "publish_bucket": MODEL_BUCKET,
        "model_name": f"rfdetr-{model}",
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def artifact_traffic(run_dir: Path, spec: dict) -> tuple[int, int]:
    """(uploaded, downloaded) bytes of the run's artifacts as KFP's launcher would move them.

    Each task's launcher uploads every output artifact once and downloads every input artifact in
    full (``kubeflow/pipelines@2.17.0 backend/src/v2/component/launcher_v2.go``;
    ``objectstore/object_store.go l.111-205``): sizes of ``<run_dir>/<task>/<output>`` over the
    compiled ``spec``'s tasks and artifact edges.
    """
    tasks = spec["root"]["dag"]["tasks"]
    up = down = 0  # a missing path counts 0 (_size)
    for name, task in tasks.items():
        component = spec["components"][task["componentRef"]["name"]]
        for output in component.get("outputDefinitions", {}).get("artifacts", {}):
            up += _size(run_dir / name / output)
        for edge in task.get("inputs", {}).get("artifacts", {}).values():
            if source := edge.get("taskOutputArtifact"):
                down += _size(run_dir / source["producerTask"] / source["outputArtifactKey"])
    return up, down


def pipeline_spec() -> dict:
    """The compiled pipeline (local settings) as a dict."""
    from google.protobuf import json_format

    from pipelines._platform import Platform
    from pipelines.training_pipeline import build_pipeline

    return json_format.MessageToDict(build_pipeline(Platform.for_local()).pipeline_spec)


def bytes_moved_line(run_dir: Path, transfer_log: Path, spec: dict) -> str:
    """Bytes moved by the run: the steps' own object-store transfers + artifacts."""
    from rfdetr.storage.traffic import read_log

    steps = read_log(transfer_log)
    up, down = artifact_traffic(run_dir, spec)
    total = steps.up_bytes + steps.down_bytes + up + down
    return (
        f"bytes moved by the run: {total / 1e6:.2f} MB = steps' object-store transfers "
        f"{(steps.up_bytes + steps.down_bytes) / 1e6:.2f} MB (up {steps.up_bytes / 1e6:.2f}, "
        f"down {steps.down_bytes / 1e6:.2f}; counted by rfdetr.storage) + artifacts "
        f"{(up + down) / 1e6:.2f} MB (each output uploaded once, {up / 1e6:.2f}, and downloaded "
        f"in full by each step that takes it, {down / 1e6:.2f}, as KFP's launcher does on a "
        "cluster; kfp.local reads them in place)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="", help="folder or s3:// URI (default: generated)")
    parser.add_argument("--model", default="tiny", help="model size preset (default tiny)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="default .demo/")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    from pipelines.local import LocalRunError, run_local, summary_lines

    started = time.monotonic()
    # Each step is a subprocess of this one. On a busy CPU, torch's default of one thread per
    # core loses far more to contention than a small model gains from parallelism (~10x here).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    with object_store(workdir / "objectstore"):
        uri = dataset_uri(args.dataset, workdir)
        params = pipeline_arguments(uri, args.model, args.epochs, generated=not args.dataset)
        log = workdir / "pipeline.log"
        _say(f"pipeline: {args.model}, {args.epochs} epochs, kfp.local (step output: {log})")
        from rfdetr.storage.traffic import TRANSFER_LOG_ENV

        transfers = workdir / "transfers.log"
        transfers.unlink(missing_ok=True)
        os.environ[TRANSFER_LOG_ENV] = str(transfers)  # inherited by the steps' processes
        try:
            run = run_local(
                params, pipeline_root=workdir / "runs", log_path=log, console=sys.stdout
            )
        except LocalRunError as exc:
            _say(f"demo: step {exc.task} failed: {exc}")
            return 1
        finally:
            del os.environ[TRANSFER_LOG_ENV]
        moved = bytes_moved_line(run.run_dir, transfers, pipeline_spec())
        published = []
        if run.published_uri:  # downloaded again, every file checked against its manifest
            from rfdetr.storage import download_prefix, parse_uri

            stamp = run.published_uri.rstrip("/").rsplit("/", 1)[-1]
            files = download_prefix(run.published_uri, workdir / "published" / stamp).files
            published = [str(parse_uri(run.published_uri).child(rel)) for rel in files]
    _say("")
    _say("\n".join(summary_lines(run)))
    for item in published:
        _say(f"  {item}")
    if published:
        _say(f"  (downloaded again and checked against manifest.json: {workdir / 'published'})")
    _say(moved)
    _say(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
