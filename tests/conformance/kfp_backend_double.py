"""A double of the KFP v2 backend: the driver's executor input, the launcher's placeholders,
artifact staging and output collection, re-created from kubeflow/pipelines' Go code.

Each function names the Go function it follows. Sources (read with the search tool):
launcher ``backend/src/v2/component/launcher_v2.go`` as stored at kubeflow/pipelines@0045064
(``collectOutputParameters`` is the same at tags 2.4.0-2.17.0: l.484-513 at 2.17.0, per
shared/reference/kfp-backend-contract.md §1.2); driver ``provisionOutputs`` (output parameter
files ``/tmp/kfp/outputs/<name>``, artifact URIs ``<pipeline root>/<task>/<salt>/<name>``), null
optional inputs skipped (2.17.0 ``backend/src/v2/driver/resolve.go`` l.334-344),
``{{$.pipeline_job_uuid}}`` resolved (``resolve.go`` l.440); ``metadata.TextToPbValue``.

A pod is a fresh folder (``pods/<task>``) standing in for ``/``: the driver's absolute paths are
rooted there, and ``pod/sitecustomize.py`` moves the SDK's ``/minio/``, ``/s3/``, ``/gcs/``
mount points there too (emptyDirs on a cluster). The launcher's object store for pipeline-root
artifacts is the folder ``store/``. The command is the IR's own; ``python3`` on ``PATH`` is this
interpreter (in the image, ``/opt/venv`` is first on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"  # KFP's default pipeline root
JOB_ID_PLACEHOLDER = "{{$.pipeline_job_uuid}}"
_MOUNTS = (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/"))
_POD_SITE = Path(__file__).parent / "pod"
_GO_BOOL = {  # Go's strconv.ParseBool
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


class LauncherError(AssertionError):
    """What the launcher or driver would fail the task with (the Go error text)."""


@dataclass
class Produced:
    """What the launcher records in MLMD for a finished task, and consumers read back."""

    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # RuntimeArtifact JSON
    parameters: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # output artifacts with no local file


def local_path_for_uri(uri: str) -> str:
    """``LocalPathForURI``: ``s3://b/k`` -> ``/s3/b/k`` (likewise ``minio://``, ``gs://``)."""
    for scheme, mount in _MOUNTS:
        if uri.startswith(scheme):
            return mount + uri[len(scheme) :]
    raise LauncherError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


def _artifact(uri: str, schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A RuntimeArtifact: its URI, type and the metadata ``spec`` gives (none: empty)."""
    return {"uri": uri, "type": schema, "metadata": spec.get("metadata", {})}


def provision_outputs(
    pod: Path, pipeline_root: str, task: str, outputs_spec: dict[str, Any], salt: str
) -> dict[str, Any]:
    """The driver's ``provisionOutputs``: an artifact URI per output artifact, an output file per
    output parameter, and the output metadata file (absolute paths rooted at ``pod``)."""
    artifacts = {}
    for name, spec in outputs_spec.get("artifacts", {}).items():
        uri = f"{pipeline_root}/{task}/{salt}/{name}"
        artifacts[name] = {"artifacts": [_artifact(uri, spec["artifactType"], spec)]}
    parameters = {
        name: {"outputFile": f"{pod}/tmp/kfp/outputs/{name}"}
        for name in outputs_spec.get("parameters", {})
    }
    return {
        "artifacts": artifacts,
        "parameters": parameters,
        "outputFile": f"{pod}/tmp/kfp_outputs/output_metadata.json",
    }


def resolve_inputs(
    task: dict[str, Any], run_params: dict[str, Any], produced: dict[str, Produced], job_id: str
) -> dict[str, Any]:
    """The driver's input resolution for a task of the root DAG.

    ``run_params`` are the root DAG's resolved inputs (run arguments and defaults; an optional
    parameter without either is absent, i.e. null, and skipped).
    """
    values: dict[str, Any] = {}
    for name, spec in task.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in spec:
            value = run_params.get(spec["componentInputParameter"])
            if value is None:  # null optional input: skipped (resolve.go l.334-344)
                continue
        elif "runtimeValue" in spec:
            value = spec["runtimeValue"]["constant"]
            if isinstance(value, str):
                value = value.replace(JOB_ID_PLACEHOLDER, job_id)
        elif "taskOutputParameter" in spec:
            ref = spec["taskOutputParameter"]
            value = produced[ref["producerTask"]].parameters[ref["outputParameterKey"]]
        else:
            raise LauncherError(f"input parameter {name}: unsupported spec {spec}")
        values[name] = value
    artifacts = {}
    for name, spec in task.get("inputs", {}).get("artifacts", {}).items():
        ref = spec["taskOutputArtifact"]
        found = produced[ref["producerTask"]].artifacts.get(ref["outputArtifactKey"])
        if found is None:
            raise LauncherError(
                f"cannot find output artifact key {ref['outputArtifactKey']!r} in producer "
                f"task {ref['producerTask']!r}"
            )
        artifacts[name] = {"artifacts": [found]}
    return {"parameterValues": values, "artifacts": artifacts}


def add_default_params(executor_input: dict[str, Any], component: dict[str, Any]) -> dict:
    """``addDefaultParams``: a copy with each missing input parameter's default filled in."""
    filled = json.loads(json.dumps(executor_input))
    values = filled["inputs"].setdefault("parameterValues", {})
    for name, spec in component.get("inputDefinitions", {}).get("parameters", {}).items():
        if "defaultValue" in spec and name not in values:
            values[name] = spec["defaultValue"]
    return filled


def placeholders(executor_input: dict[str, Any]) -> dict[str, str]:
    """``getPlaceholders``: ``{{$}}`` (the executor input as protojson) and the path/URI ones."""
    message = json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())
    found = {"{{$}}": protojson(message)}
    for side in ("inputs", "outputs"):
        for name, items in executor_input[side].get("artifacts", {}).items():
            uri, key = items["artifacts"][0]["uri"], f"{{{{$.{side}.artifacts['{name}']"
            found[f"{key}.uri}}}}"] = uri
            found[f"{key}.path}}}}"] = local_path_for_uri(uri)
    for name, value in executor_input["inputs"].get("parameterValues", {}).items():
        found[f"{{{{$.inputs.parameters['{name}']}}}}"] = _text(value)
    for name, param in executor_input["outputs"].get("parameters", {}).items():
        found[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = param["outputFile"]
    return found


def protojson(message: Any) -> str:
    """Go's ``protojson.Marshal`` of a message: like json_format, but a ``Value`` number that is
    integral is written without a fraction (``17``, not ``17.0``), as Go formats float64."""

    def go_numbers(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: go_numbers(v) for k, v in node.items()}
        if isinstance(node, list):
            return [go_numbers(v) for v in node]
        if isinstance(node, float) and node.is_integer() and abs(node) < 1e21:
            return int(node)
        return node

    return json.dumps(go_numbers(json_format.MessageToDict(message)), separators=(",", ":"))


def _text(value: Any) -> str:
    """A parameter value as getPlaceholders writes it (Go FormatFloat 'f' -1, FormatBool)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return json.dumps(value, separators=(",", ":"))


def text_to_pb_value(text: str, parameter_type: str) -> Any:
    """``metadata.TextToPbValue``: the typed value of an output parameter file's text."""
    try:
        if parameter_type == "STRING":
            return text
        if parameter_type == "NUMBER_INTEGER":
            return int(text.strip(), 10)
        if parameter_type == "NUMBER_DOUBLE":
            return float(text.strip())
        if parameter_type == "BOOLEAN":
            return _GO_BOOL[text.strip()]
        return json.loads(text)  # LIST, STRUCT
    except (ValueError, KeyError) as exc:
        quoted = f"text={json.dumps(text)}, type={json.dumps(parameter_type)}"
        raise LauncherError(f"TextToPbValue({quoted}) failed: {exc}") from None


def read_executor_output(path: Path) -> dict[str, Any]:
    """``getExecutorOutputFile``: none written -> empty; else protojson, unknown fields errors."""
    if not path.exists():
        return {"parameterValues": {}, "artifacts": {}}
    text = path.read_text()
    try:
        json_format.Parse(text, pipeline_spec_pb2.ExecutorOutput())
    except json_format.ParseError as exc:
        raise LauncherError(f"failed to unmarshall ExecutorOutput in file {path}: {exc}") from None
    return {"parameterValues": {}, "artifacts": {}, **json.loads(text)}


def collect_output_parameters(
    executor_input: dict[str, Any], executor_output: dict[str, Any], component: dict[str, Any]
) -> None:
    """``collectOutputParameters``: every declared output parameter must be in the output
    metadata's ``parameterValues`` or have its output file; a missing file is a hard error."""
    values = executor_output["parameterValues"]
    declared = component.get("outputDefinitions", {}).get("parameters", {})
    for name, param in executor_input["outputs"].get("parameters", {}).items():
        if name in values:
            continue
        if name not in declared:
            raise LauncherError(
                f"failed to find output parameter name={json.dumps(name)} in component spec"
            )
        kind, path = declared[name]["parameterType"], param["outputFile"]
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            quoted = f"name={json.dumps(name)} type={json.dumps(kind)} path={json.dumps(path)}"
            raise LauncherError(
                f"failed to read output parameter {quoted}: open {path}: no such file or directory"
            ) from None
        values[name] = text_to_pb_value(text, kind)


@dataclass
class Backend:
    """One pipeline run: a store, a pod folder per task, and what each finished task produced."""

    root: Path
    spec: dict[str, Any]
    run_params: dict[str, Any]
    store_env: dict[str, str]
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    produced: dict[str, Produced] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def pipeline_root(self) -> str:
        return f"{PIPELINE_ROOT}/{self.spec['pipelineInfo']['name']}/{self.job_id}"

    def store_path(self, uri: str) -> Path:
        return self.root / "store" / local_path_for_uri(uri).lstrip("/")

    def run_task(self, name: str, secret_tasks: set[str]) -> dict[str, Any]:
        """Drive task ``name`` of the root DAG, then launch it as ``executeV2`` does (inputs
        staged, placeholders, the command in a clean directory, outputs collected and
        uploaded). Returns its executor input."""
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        if "importer" in executor:
            return self._import(name, task, executor["importer"])
        pod = self.root / "pods" / name
        outputs_spec = component.get("outputDefinitions", {})
        executor_input = {
            "inputs": resolve_inputs(task, self.run_params, self.produced, self.job_id),
            "outputs": provision_outputs(pod, self.pipeline_root, name, outputs_spec, "1"),
        }
        self._stage_inputs(pod, executor_input)
        container = executor["container"]
        argv = [*container["command"], *container.get("args", [])]
        for key, value in placeholders(add_default_params(executor_input, component)).items():
            argv = [arg.replace(key, value) for arg in argv]
        (pod / "workdir").mkdir(parents=True)
        done = subprocess.run(
            argv,
            cwd=pod / "workdir",
            env=self._pod_env(pod, container, name in secret_tasks),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        self.logs[name] = done.stdout + done.stderr
        if done.returncode != 0:
            raise LauncherError(f"task {name} exited {done.returncode}:\n{self.logs[name][-3000:]}")
        output = read_executor_output(Path(executor_input["outputs"]["outputFile"]))
        collect_output_parameters(executor_input, output, component)
        self.produced[name] = self._upload(pod, executor_input, output)
        return executor_input

    def _import(self, name: str, task: dict[str, Any], importer: dict[str, Any]) -> dict:
        """An importer task (no pod): the launcher's importer mode records an artifact at the
        given URI (a constant or the task's ``uri`` parameter) with the given type/metadata."""
        inputs = resolve_inputs(task, self.run_params, self.produced, self.job_id)
        source = importer["artifactUri"]
        uri = source.get("constant") or inputs["parameterValues"][source["runtimeParameter"]]
        artifact = _artifact(uri, importer["typeSchema"], importer)
        self.produced[name] = Produced(artifacts={"artifact": artifact})
        return {"inputs": inputs, "outputs": {}}

    def _download(self, uri: str, target: Path) -> None:
        """``DownloadBlob``: from the run's store, or (an imported artifact) the object store."""
        source = self.store_path(uri)
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            shutil.copy2(source, target)
        else:
            from rfdetr import storage

            storage.download_prefix(uri, target)

    def _stage_inputs(self, pod: Path, executor_input: dict[str, Any]) -> None:
        """``downloadArtifacts`` into a fresh pod, then ``prepareOutputFolders``."""
        for items in executor_input["inputs"]["artifacts"].values():
            uri = items["artifacts"][0]["uri"]
            target = pod / local_path_for_uri(uri).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            self._download(uri, target)
        for param in executor_input["outputs"]["parameters"].values():
            Path(param["outputFile"]).parent.mkdir(parents=True, exist_ok=True)
        for items in executor_input["outputs"]["artifacts"].values():
            local = pod / local_path_for_uri(items["artifacts"][0]["uri"]).lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)

    def _pod_env(self, pod: Path, container: dict[str, Any], with_secret: bool) -> dict[str, str]:
        """The pod's environment: the IR's ``env``; the store only where the secret is mounted."""
        drop = ("OBJECTSTORECONFIG_", "AWS_", "MINIO_SERVICE_", "PUSHGATEWAY_", "NVIDIA_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update({e["name"]: e["value"] for e in container.get("env", [])})
        if with_secret:
            env.update(self.store_env)
        shim = self.root / "bin"
        if not (shim / "python3").exists():
            shim.mkdir(parents=True, exist_ok=True)
            (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            (shim / "python3").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_POD_SITE), *[p for p in sys.path if p and Path(p).is_dir()]]
        )
        env["CONFORMANCE_POD_ROOT"] = str(pod)
        env["OMP_NUM_THREADS"] = "1"
        return env

    def _upload(
        self, pod: Path, executor_input: dict[str, Any], output: dict[str, Any]
    ) -> Produced:
        """``uploadOutputArtifacts``: metadata merged, local files to the store, MLMD record."""
        produced = Produced(parameters=dict(output["parameterValues"]))
        for name, items in executor_input["outputs"]["artifacts"].items():
            artifact = dict(items["artifacts"][0])
            written = output["artifacts"].get(name, {}).get("artifacts", [])
            if written:  # mergeRuntimeArtifacts
                artifact["uri"] = written[0].get("uri") or artifact["uri"]
                artifact["metadata"] = {**artifact["metadata"], **written[0].get("metadata", {})}
            local = pod / local_path_for_uri(artifact["uri"]).lstrip("/")
            if local.is_dir():
                shutil.copytree(local, self.store_path(artifact["uri"]))
            elif local.is_file():
                self.store_path(artifact["uri"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(local, self.store_path(artifact["uri"]))
            else:  # the launcher only warns ("Local filepath ... does not exist")
                produced.missing.append(name)
            produced.artifacts[name] = artifact
        return produced


def embedded_function(container: dict[str, Any]) -> Any:
    """The Python function the IR's command runs: the program text it writes to
    ``ephemeral_component.py`` (``$0``), executed, then ``--function_to_execute``."""
    program = container["command"][-1]
    args = container["args"]
    name = args[args.index("--function_to_execute") + 1]
    namespace: dict[str, Any] = {"__name__": "ephemeral_component"}
    exec(compile(program, "ephemeral_component.py", "exec", dont_inherit=True), namespace)
    func = namespace[name]
    return getattr(func, "python_func", func)


def schedule(tasks: dict[str, dict[str, Any]]) -> list[str]:
    """The root DAG's tasks in an order that respects ``dependentTasks`` (Argo's DAG order)."""
    order: list[str] = []
    pending = dict(tasks)
    while pending:
        ready = sorted(
            n for n, t in pending.items() if set(t.get("dependentTasks", [])) <= set(order)
        )
        if not ready:
            raise LauncherError(f"the DAG has a cycle among {sorted(pending)}")
        order.extend(ready)
        for n in ready:
            del pending[n]
    return order
