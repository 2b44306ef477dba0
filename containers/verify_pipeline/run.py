"""One pipeline run in one image: compile in the image, stand in for Kubernetes, run it."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    MIRROR_ROOT,
    MODEL_BUCKET,
    SECRET_NAME,
    TINY_OVERRIDES,
    TINY_PARAMS,
    SetupError,
    say,
)
from .engine import podman_not_found_as_404, run_helper, ulimits
from .watcher import ContainerWatcher, StepContainer

if TYPE_CHECKING:
    import docker

    from .store import Store


@dataclass
class Run:
    """Everything a run produced that the checks look at."""

    image: str
    kind: str
    work: Path
    root: Path
    dataset_dir: Path
    dataset_uri: str
    model_name: str
    uid: int
    gid: int
    arguments: dict[str, Any] = field(default_factory=dict)
    compiled: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    log: Path | None = None
    containers: list[StepContainer] = field(default_factory=list)
    watch_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


_COMPILE = r"""
set -e
rfdetr-pipeline compile --output /out/pipeline.yaml "$@" >/out/compile.txt
python - >/out/arguments.json <<'EOF'
import json
from pipelines.local import local_arguments
print(json.dumps(local_arguments(json.load(open("/out/wanted.json")))))
EOF
"""


def compile_in_image(client: docker.DockerClient, run: Run, store: Store, epochs: int) -> str:
    """The pipeline YAML compiled by the image's own code; fills ``run.arguments``.

    The arguments are filled by the image's ``pipelines.local.local_arguments`` (kfp.local
    cannot pass a missing optional parameter).
    """
    out = run.work / "compiled"
    out.mkdir()
    wanted = {
        "dataset_uri": run.dataset_uri,
        "model_size": "tiny",
        "epochs": epochs,
        **TINY_PARAMS,
        "overrides": TINY_OVERRIDES,
        "publish_bucket": MODEL_BUCKET,
        "model_name": run.model_name,
        "checkpoint_mirror_uri": MIRROR_ROOT,
    }
    (out / "wanted.json").write_text(json.dumps(wanted))
    os.chown(out, run.uid, run.gid)
    options = [
        f"--image={run.image}",
        f"--cpu-image={run.image}",  # every step in the image under test
        "--train-gpus=0",
        "--eval-gpus=0",
        "--train-retries=0",
        f"--store-host={store.host}",
        f"--store-port={store.port}",
        f"--secret={SECRET_NAME}",
    ]
    run_helper(client, run.image, ["sh", "-ec", _COMPILE, "compile", *options], {str(out): "/out"})
    run.arguments = json.loads((out / "arguments.json").read_text())
    return (out / "pipeline.yaml").read_text()


def _kubernetes_executors(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The YAML's ``platforms.kubernetes`` executor settings (``{}`` when it has none)."""
    platform = docs[1].get("platforms", {}).get("kubernetes", {}) if len(docs) > 1 else {}
    return platform.get("deploymentSpec", {}).get("executors", {})


def resolve_secrets(docs: list[dict[str, Any]], secrets_: Mapping[str, Mapping[str, str]]) -> int:
    """Do what Kubernetes does for ``secretAsEnv``: put the secret's keys into the env of the
    executors that reference it (kfp.local ignores ``platforms.kubernetes``). Returns how many
    executors got a secret. Raises SetupError for an unknown secret or key (a pod would not
    start either)."""
    executors = docs[0]["deploymentSpec"]["executors"]
    count = 0
    for label, spec in _kubernetes_executors(docs).items():
        for ref in spec.get("secretAsEnv", []):
            name = ref.get("secretName") or (
                ref.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant", "")
            )
            if name not in secrets_:
                if ref.get("optional"):
                    continue
                raise SetupError(f"{label}: secret {name!r} does not exist here")
            env = executors[label]["container"].setdefault("env", [])
            for pair in ref.get("keyToEnv", []):
                if pair["secretKey"] not in secrets_[name]:
                    raise SetupError(f"{label}: secret {name!r} has no key {pair['secretKey']!r}")
                env.append({"name": pair["envVar"], "value": secrets_[name][pair["secretKey"]]})
            count += 1
    return count


_SHM_QUANTITY = r"(\d+(?:\.\d*)?|\.\d+)(?:([KMGTPE]i|[mkMGTPE]?)|[eE]([+-]?\d+))"


def shm_bytes(docs: list[dict[str, Any]]) -> int:
    """The largest memory ``emptyDir`` on ``/dev/shm`` the YAML asks for (64 MiB when none).

    Reads every unsigned quantity form ``pipelines.compile`` accepts (binary ``Ki``..``Ei``,
    decimal ``k``..``E``, milli ``m``, exponent ``e6``; k8s.io/apimachinery resource/quantity.go).
    """
    scale = {f"{p}i": 1 << (10 * n) for n, p in enumerate("KMGTPE", 1)}
    scale.update({p: 1000**n for n, p in enumerate("kMGTPE", 1)}, m=1e-3, **{"": 1})
    best = 64 << 20
    for spec in _kubernetes_executors(docs).values():
        for mount in spec.get("emptyDirMounts", []):
            text = str(mount.get("sizeLimit", ""))
            match = re.fullmatch(_SHM_QUANTITY, text)
            if mount.get("mountPath") == "/dev/shm" and match:
                factor = 10 ** int(match.group(3)) if match.group(3) else scale[match.group(2)]
                best = max(best, int(float(match.group(1)) * factor))
    return best


def run_pipeline(client: docker.DockerClient, run: Run, store: Store, epochs: int) -> None:
    """Compile in the image, resolve the secret, run with DockerRunner; fills ``run``."""
    import yaml
    from kfp import components, local

    yaml_text = compile_in_image(client, run, store, epochs)
    docs = [d for d in yaml.safe_load_all(yaml_text) if d]
    run.compiled = copy.deepcopy(docs[0])  # as compiled: no keys
    keys = {"accesskey": store.access_key, "secretkey": store.secret_key}
    with_secret = resolve_secrets(docs, {SECRET_NAME: keys})
    pipeline = components.load_component_from_text(yaml.safe_dump_all(docs))  # memory only
    run.root.mkdir()
    os.chown(run.root, run.uid, run.gid)  # the steps write here as the image's user
    runner = local.DockerRunner(network_mode="host", ulimits=ulimits(), shm_size=shm_bytes(docs))
    local.init(runner=runner, pipeline_root=str(run.root))
    run.log = run.work / "steps.log"
    logs = run.work / "container-logs"
    logs.mkdir()
    say(
        f"  compiled in the image; secret {SECRET_NAME} resolved into {with_secret} steps; "
        f"step output: {run.log}"
    )
    started = time.monotonic()
    with (
        warnings.catch_warnings(),
        podman_not_found_as_404(),
        ContainerWatcher(client, logs) as watcher,
        open(run.log, "w") as log,
        contextlib.redirect_stdout(log),
    ):
        done = threading.Event()
        thread = threading.Thread(target=_progress, args=(watcher, done), daemon=True)
        thread.start()
        try:
            warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current")
            task = pipeline(**run.arguments)
            run.outputs = dict(task.outputs)
        except Exception as exc:  # kfp.local's RuntimeError, a missing output...
            run.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
        finally:
            run.seconds = time.monotonic() - started
    done.set()  # after the watcher's last events
    thread.join(timeout=5)
    run.containers = watcher.ordered()
    run.watch_errors = watcher.errors


def _progress(watcher: ContainerWatcher, done: threading.Event) -> None:
    """Print each step's container as it ends (to the real stdout; kfp.local's goes to the log)."""
    shown: set[str] = set()
    while True:
        last = done.wait(0.5)
        for record in watcher.ordered():
            if record.id not in shown and record.exit_code is not None:
                shown.add(record.id)
                seconds = record.seconds or 0.0
                line = f"  {record.step:<18} exit {record.exit_code}  {seconds:6.1f} s"
                print(line, file=sys.__stdout__, flush=True)
        if last:
            return
