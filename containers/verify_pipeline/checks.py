"""The independent checks of a run: each returns a one-line detail or raises CheckFailed.

None trusts what kfp.local reports (kfp 2.17's DockerRunner reports a failed container as
SUCCESS, kubeflow/pipelines#13332): they read podman's record of each container, the files
the steps wrote, and the store through a separate S3 client.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .common import MIRROR_ROOT, MODEL_BUCKET, STEPS, CheckFailed, expect, sha256_file
from .run import Run
from .store import Store, object_size, read_object


def _artifact(run: Run, name: str) -> Path:
    value = run.outputs.get(name)
    if value is None:
        raise CheckFailed(f"the pipeline has no output {name!r} ({run.error or 'no error'})")
    return Path(value.path)


def check_compiled(run: Run) -> str:
    """Every executor of the YAML compiled in the image runs that image with KFP's command."""
    executors = run.compiled["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    expect(images == {run.image}, f"executor images {sorted(images)}")
    commands = {" ".join(e["container"]["command"][:2]) for e in executors.values()}
    main = all("kfp.dsl.executor_main" in e["container"]["command"][2] for e in executors.values())
    expect(commands == {"sh -ec"} and main, f"unexpected executor commands {commands}")
    return f"{len(executors)} executors, image {run.image}, sh -ec ... kfp.dsl.executor_main"


def check_kfp_local(run: Run) -> str:
    """kfp.local finished without an error of its own."""
    expect(not run.error, run.error)
    return f"finished in {run.seconds:.0f} s (its status alone is not trusted, see #13332)"


def check_containers(run: Run) -> str:
    """One container per step, each of the image, its compiled command, its user, exit 0."""
    expect(not run.watch_errors, f"containers not watched: {run.watch_errors}")
    bad = [f"{c.step} exited {c.exit_code}" for c in run.containers if c.exit_code != 0]
    expect(not bad, "; ".join(bad) + " (kfp.local reported SUCCESS: #13332)" * (not run.error))
    steps = [c.step for c in run.containers]
    expect(
        sorted(steps) == sorted(STEPS),
        f"expected one container per step {list(STEPS)}, podman ran {steps}",
    )
    images = {c.image for c in run.containers}
    expect(images == {run.image}, f"containers ran {sorted(images)}, expected {run.image}")
    executors = run.compiled["deploymentSpec"]["executors"]
    for record in run.containers:
        compiled = executors[f"exec-{record.step.replace('_', '-')}"]["container"]["command"]
        expect(
            record.command[: len(compiled)] == compiled
            and record.command[len(compiled)] == "--executor_input",
            f"{record.step}: the container's command is not the compiled one",
        )
    users = {c.user for c in run.containers}
    expect(users <= {"", f"{run.uid}:{run.gid}"}, f"containers ran as {users}")
    return (
        f"{len(steps)} containers of {run.image}, all exit 0, each with its executor's "
        f"compiled command, user {run.uid}:{run.gid}"
    )


def check_store_env(run: Run) -> str:
    """The object store's endpoint and keys reached exactly the steps the YAML gives them to."""
    wanted = {
        "OBJECTSTORECONFIG_HOST",
        "OBJECTSTORECONFIG_PORT",
        "OBJECTSTORECONFIG_SECURE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    with_store = sorted(c.step for c in run.containers if c.store_env)
    executors = run.compiled["deploymentSpec"]["executors"]
    expected = sorted(
        label.removeprefix("exec-").replace("-", "_")
        for label, spec in executors.items()
        if any(e["name"] == "OBJECTSTORECONFIG_HOST" for e in spec["container"].get("env", []))
    )
    expect(bool(expected), "the compiled YAML gives no step the object-store endpoint")
    expect(with_store == expected, f"store settings in {with_store}, the YAML says {expected}")
    partial = [
        f"{c.step}: {c.store_env}"
        for c in run.containers
        if c.store_env and set(c.store_env) != wanted
    ]
    expect(not partial, f"incomplete object-store settings: {partial}")
    return f"endpoint + keys in {', '.join(with_store)} only (from the YAML's env and secretAsEnv)"


def check_ownership(run: Run) -> str:
    """Everything the steps wrote under the pipeline root belongs to the image's user."""
    files = [p for p in run.root.rglob("*") if not p.is_relative_to(run.root / ".kfp_cache")]
    others = sorted(
        {f"{p.stat().st_uid}:{p.stat().st_gid}" for p in files} - {f"{run.uid}:{run.gid}"}
    )
    expect(bool(files), f"nothing under {run.root}")
    expect(not others, f"files under {run.root} owned by {others}, not {run.uid}:{run.gid}")
    return f"{len(files)} files/folders, all {run.uid}:{run.gid} (the image's user)"


def check_dataset(run: Run, store: Store) -> str:
    """fetch_dataset's output pins the dataset uploaded: its reference names the stored
    manifest.json by sha256, and that manifest lists every local file with its sha256."""
    found = sorted(run.root.glob("*/fetch-dataset/dataset/dataset-reference.json"))
    expect(len(found) == 1, f"expected one fetch-dataset reference, found {found}")
    ref = json.loads(found[0].read_text())
    bucket, _, prefix = str(ref["uri"]).split("://", 1)[1].partition("/")
    data = read_object(store.client(), bucket, f"{prefix}/manifest.json")
    expect(hashlib.sha256(data).hexdigest() == ref["manifest_sha256"], "manifest sha256 differs")
    listed = {e["path"]: e["sha256"] for e in json.loads(data)["files"]}
    local = {
        p.relative_to(run.dataset_dir).as_posix(): sha256_file(p)
        for p in run.dataset_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    expect(listed == local, f"the pinned manifest is not the local dataset ({len(listed)} files)")
    return f"{len(local)} files of {run.dataset_uri} pinned by manifest sha256, not copied"


def check_metrics(run: Run) -> str:
    """The report's metrics.json holds the mAP the pipeline output; the report is complete."""
    report = _artifact(run, "report")
    metrics = json.loads((report / "metrics.json").read_text())
    value = run.outputs.get("map_50_95")
    if not isinstance(value, float):
        raise CheckFailed(f"map_50_95 output {value!r}")
    found = _find_number(metrics, "map_50_95")
    if found is None:
        raise CheckFailed("metrics.json has no map_50_95")
    expect(abs(found - value) < 1e-9, f"metrics.json map_50_95 {found} != output {value}")
    expect(0.0 <= value <= 1.0, f"mAP50:95 {value} outside [0, 1]")
    for name in ("report.html", "report.md"):
        expect((report / name).is_file(), f"no {name} in the report")
    return f"mAP50:95 {value:.4f} (output == metrics.json), report.html/md present"


def _find_number(doc: Any, key: str) -> float | None:
    if isinstance(doc, dict):
        if isinstance(doc.get(key), (int, float)) and not isinstance(doc[key], bool):
            return float(doc[key])
        for value in doc.values():
            found = _find_number(value, key)
            if found is not None:
                return found
    return None


def check_onnx(run: Run) -> str:
    """The exported ONNX file passes onnx's checker and runs in onnxruntime on the host."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    files = sorted(_artifact(run, "onnx_model").glob("*.onnx"))
    expect(len(files) == 1, f"expected one .onnx file, found {[f.name for f in files]}")
    onnx.checker.check_model(str(files[0]))
    session = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        feeds[spec.name] = np.random.default_rng(0).random(shape, dtype=np.float32)
    outputs = session.run(None, feeds)
    shapes = [tuple(o.shape) for o in outputs]
    expect(all(np.isfinite(o).all() for o in outputs), "non-finite ONNX outputs")
    size = files[0].stat().st_size / 1e6
    return f"{files[0].name} {size:.1f} MB: onnx checker ok, onnxruntime CPU -> {shapes}"


def check_published(run: Run, store: Store) -> tuple[str, list[str]]:
    """Every published object matches its sha256 manifest; latest.json and model.json agree;
    the checkpoint and ONNX file published are the artifacts. (detail, listing of objects)"""
    client = store.client()
    uri = str(run.outputs.get("published_uri") or "")
    prefix = f"s3://{MODEL_BUCKET}/{run.model_name}/"
    expect(uri.startswith(prefix), f"published_uri {uri!r} is not under {prefix}")
    version = uri[len(prefix) :].strip("/")
    names = sorted(
        o.object_name
        for o in client.list_objects(MODEL_BUCKET, prefix=f"{run.model_name}/", recursive=True)
    )
    base, latest_key = f"{run.model_name}/{version}/", f"{run.model_name}/latest.json"
    stray = [n for n in names if n != latest_key and not n.startswith(base)]
    expect(not stray, f"objects outside {base} and latest.json: {stray}")
    manifest = json.loads(read_object(client, MODEL_BUCKET, base + "manifest.json"))
    entries = {e["path"]: e for e in manifest["files"]}
    listed = {n[len(base) :] for n in names if n.startswith(base)} - {"manifest.json"}
    expect(listed == set(entries), f"store {sorted(listed)} != manifest {sorted(entries)}")
    bad = []
    for path, entry in entries.items():
        data = read_object(client, MODEL_BUCKET, base + path)
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            bad.append(path)
    expect(not bad, f"size/sha256 differ from the manifest: {bad}")
    latest = json.loads(read_object(client, MODEL_BUCKET, latest_key))
    expect(
        latest.get("version") == version and latest.get("uri", "").rstrip("/") == uri.rstrip("/"),
        f"latest.json {latest} does not point at {uri}",
    )
    card = json.loads(read_object(client, MODEL_BUCKET, base + "model.json"))
    expect(
        abs(float(card["map_50_95"]) - float(run.outputs["map_50_95"])) < 1e-9,
        f"model.json map_50_95 {card['map_50_95']} != {run.outputs['map_50_95']}",
    )
    # The files published are the artifacts the earlier containers handed over.
    for artifact, pattern in (("model", "*.pth"), ("onnx_model", "*.onnx")):
        local_files = sorted(_artifact(run, artifact).glob(pattern))
        expect(len(local_files) == 1, f"{artifact}: {local_files}")
        entry = entries.get(local_files[0].name)
        expect(
            entry is not None and entry["sha256"] == sha256_file(local_files[0]),
            f"published {local_files[0].name} differs from the {artifact} artifact",
        )
    listing = [f"s3://{MODEL_BUCKET}/{n}  ({object_size(client, MODEL_BUCKET, n)})" for n in names]
    total = sum(e["size"] for e in entries.values())
    detail = (
        f"{len(entries)} files + manifest.json under {uri} ({total / 1e6:.1f} MB), sha256 of "
        "each object matches; latest.json and model.json agree; checkpoint and ONNX == artifacts"
    )
    return detail, listing


def check_mirror(run: Run, store: Store) -> str:
    """After success train's mirror keeps only the resume and periodic checkpoints."""
    client = store.client()
    bucket, _, prefix = MIRROR_ROOT.removeprefix("s3://").partition("/")
    left = [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]
    names = {name.rsplit("/", 1)[-1] for name in left}
    expect("checkpoint.pth" in names, f"no resume point in the checkpoint mirror: {left[:5]}")
    others = sorted(n for n in names if not re.fullmatch(r"checkpoint(_\d+)?\.pth", n))
    expect(not others, f"the checkpoint mirror kept more than checkpoints: {others[:5]}")
    expect(bool(run.outputs), "the pipeline did not finish")
    return f"{MIRROR_ROOT}/ holds {len(left)} checkpoint(s) only: the resume point (+ periodic)"
