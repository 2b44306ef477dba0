"""The command line: arguments, the services around all runs, one run per image, the verdict."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __doc__ as OVERVIEW
from .checks import (
    check_compiled,
    check_containers,
    check_dataset,
    check_kfp_local,
    check_metrics,
    check_mirror,
    check_onnx,
    check_ownership,
    check_published,
    check_store_env,
)
from .common import DEFAULT_STATE, ROOT, STATE_ENV, SetupError, say
from .engine import image_user, podman_service
from .report import Checks, print_failed_output, print_summary
from .run import Run, run_pipeline
from .store import Store, make_dataset, object_store

if TYPE_CHECKING:
    import docker


def default_images() -> dict[str, str]:
    """``{"gpu": ref, "cpu": ref}`` as ``containers/build.sh --print`` names them."""
    out = subprocess.run(
        ["bash", str(ROOT / "containers" / "build.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    refs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {"gpu": refs["GPU_IMAGE"], "cpu": refs["CPU_IMAGE"]}


def verify_image(
    client: docker.DockerClient,
    image: str,
    kind: str,
    work: Path,
    store: Store,
    dataset: tuple[Path, str],
    epochs: int,
) -> Checks:
    """Run the pipeline in ``image`` and check everything; the PASS/FAIL lines."""
    checks = Checks(image)
    say(f"\n== pipeline in containers of {image}: tiny, {epochs} epochs, kfp.local.DockerRunner")
    uid, gid = image_user(client, image)
    run = Run(
        image=image,
        kind=kind,
        work=work / kind,
        root=work / kind / "pipeline-root",
        dataset_dir=dataset[0],
        dataset_uri=dataset[1],
        model_name=f"rfdetr-tiny-verify-{kind}",
        uid=uid,
        gid=gid,
    )
    run.work.mkdir(parents=True)
    try:
        run_pipeline(client, run, store, epochs)
    except SetupError as exc:
        checks.record("compile in the image and start the run", False, str(exc))
        return checks
    checks.run("compiled YAML (in the image)", lambda: check_compiled(run))
    checks.run("kfp.local DockerRunner run", lambda: check_kfp_local(run))
    checks.run("one container per step, exit codes", lambda: check_containers(run))
    checks.run("object-store settings per step", lambda: check_store_env(run))
    checks.run("outputs written as the image's user", lambda: check_ownership(run))
    checks.run("fetched dataset pins the uploaded one", lambda: check_dataset(run, store))
    checks.run("evaluation report and mAP", lambda: check_metrics(run))
    checks.run("ONNX file (checker + onnxruntime)", lambda: check_onnx(run))
    listing: list[str] = []

    def published_check() -> str:
        detail, names = check_published(run, store)
        listing.extend(names)
        return detail

    checks.run("published objects vs sha256 manifest", published_check)
    checks.run("checkpoint mirror cleaned up", lambda: check_mirror(run, store))
    print_summary(run, listing)
    if checks.failures:
        print_failed_output(run)
    return checks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (``--image``... ``--epochs``, ``--state-dir``, ``--keep``)."""
    parser = argparse.ArgumentParser(
        description=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--image",
        action="append",
        default=None,
        help="image to run every step in (repeatable; default: the CPU image of build.sh)",
    )
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get(STATE_ENV) or DEFAULT_STATE),
        help=f"verify_local.sh's state folder with containers.conf (default ${STATE_ENV} or "
        f"{DEFAULT_STATE})",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (default: kept only on failure)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def _verdict(results: list[Checks], elapsed: float, work: Path, keep: bool) -> int:
    """Print the summary of all images; remove the work folder unless kept; the exit status."""
    failures = sum(r.failures for r in results)
    say(f"\n== verify_pipeline_in_image: {len(results)} image(s), {elapsed:.0f} s")
    for checks in results:
        passed = len(checks.results) - checks.failures
        say(f"  {checks.label}: {passed}/{len(checks.results)} checks passed")
    if failures or keep:
        say(f"  work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        say(f"verify_pipeline_in_image: {failures} check(s) FAILED")
        return 1
    say("verify_pipeline_in_image: all checks passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Verify each image; 0 when every check passed, 1 when one failed, 2 when it cannot run."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        say("error: run as root (rootful podman with runc is the setup that works here)")
        return 2
    try:
        import docker  # noqa: F401
        import kfp.local  # noqa: F401
    except ImportError as exc:
        say(f"error: {exc}; this needs kfp and the docker package (pip install docker)")
        return 2
    defaults = default_images()
    images = args.image or [defaults["cpu"]]
    kinds = {ref: kind for kind, ref in defaults.items()}
    state = args.state_dir.absolute()
    state.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pipeline-", dir=state))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # host side (dataset, checks)
    results: list[Checks] = []
    started = time.monotonic()
    try:
        with (
            podman_service(work, state / "containers.conf") as client,
            object_store(work / "objectstore") as store,
        ):
            missing = [i for i in images if not client.images.list(name=i)]
            if missing:
                raise SetupError(f"no such image(s): {missing} (containers/verify_local.sh)")
            dataset = make_dataset(work)
            say(f"object store: http://{store.host}:{store.port} (SeaweedFS); dataset {dataset[1]}")
            for n, image in enumerate(images):
                kind = kinds.get(image, f"image{n}")
                results.append(verify_image(client, image, kind, work, store, dataset, args.epochs))
    except SetupError as exc:
        say(f"error: {exc}")
        say(f"(work folder kept: {work})")
        return 2
    return _verdict(results, time.monotonic() - started, work, args.keep)
