"""Every component of the compiled pipeline against KFP's driver and launcher contract.

``kfp.local`` reads an output parameter file only if it exists (kfp 2.17.0 (PyPI)
``kfp/local/executor_output_utils.py`` l.147), so it cannot see a declared output that the
executor never writes; the cluster's launcher fails the task on it. These tests re-create the
backend side (:mod:`kfp_backend_double`, each function citing its Go source) and run the IR's own
commands through it.
"""

# No `from __future__ import annotations`: kfp reads the test component's annotations as types.

import inspect
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from kfp import compiler, dsl
from kfp.dsl import Artifact, Dataset, Input, Output
from kfp.dsl.types import type_annotations
from kfp_backend_double import Backend, LauncherError, embedded_function, schedule

from rfdetr import storage

_JSON_KIND = {
    "STRING": str,
    "NUMBER_INTEGER": (int, float),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}


# Artifacts whose content is their metadata (the SDK's log_* methods write no file).
_METADATA_ONLY = {"system.Metrics", "system.ClassificationMetrics"}


def _executors(spec: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{component name: (executor label, component spec)}`` of every container component."""
    return {name: (c["executorLabel"], c) for name, c in spec["components"].items()}


def _parameters_the_executor_writes(func: Any) -> set[str]:
    """Output parameter names the SDK executor writes for ``func``'s return value: ``Output``
    for a single value, each field name as written for a NamedTuple (kfp 2.17.0 (PyPI)
    ``kfp/dsl/executor.py`` l.290-309 ``write_executor_output``)."""
    annotation = inspect.signature(func).return_annotation
    if annotation in (inspect.Signature.empty, None):
        return set()
    fields = getattr(annotation, "_fields", None)
    return set(fields) if fields is not None else {"Output"}


def test_every_declared_output_parameter_is_one_the_executor_writes(ir: tuple) -> None:
    """For every component of the IR: the output parameters the compiler declared (which the
    driver gives an ``outputFile`` each) are exactly those the executor writes. The launcher's
    ``collectOutputParameters`` (kubeflow/pipelines@2.17.0 backend/src/v2/component/
    launcher_v2.go l.484-513) fails on a declared name nothing wrote; the compiler renames a
    return field that clashes with another input/output to ``<name>_2`` (kfp 2.17.0 (PyPI)
    ``kfp/dsl/component_factory.py`` l.242), which the executor never writes (B1)."""
    spec, _ = ir
    assert len(spec["components"]) >= 8
    for name, (label, component) in _executors(spec).items():
        container = spec["deploymentSpec"]["executors"][label]["container"]
        func = embedded_function(container)
        declared = set(component.get("outputDefinitions", {}).get("parameters", {}))
        written = _parameters_the_executor_writes(func)
        assert declared == written, f"{name}: declares {sorted(declared)}, writes {sorted(written)}"
        artifacts = set(component.get("outputDefinitions", {}).get("artifacts", {}))
        outputs = {  # the executor's Output[...] arguments (executor.py ``execute``)
            p.name
            for p in inspect.signature(func).parameters.values()
            if type_annotations.is_Input_Output_artifact_annotation(p.annotation)
            and type_annotations.is_artifact_wrapped_in_Output(p.annotation)
        }
        assert artifacts == outputs, f"{name}: artifacts {sorted(artifacts)} vs {sorted(outputs)}"


def test_the_double_fails_a_return_field_named_like_an_output_artifact(tmp_path: Path) -> None:
    """The backend double catches B1 where ``kfp.local`` does not: a one-step pipeline whose
    component returns ``published`` beside an artifact ``published`` fails in
    ``collectOutputParameters`` with the launcher's message for ``published_2``."""

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def clash(published: Output[Artifact]) -> NamedTuple("Out", [("published", bool)]):
        from collections import namedtuple

        with open(published.path, "w") as f:
            f.write("x")
        return namedtuple("Out", ["published"])(True)

    @dsl.pipeline(name="clash")
    def one_step() -> None:
        clash()

    path = tmp_path / "clash.yaml"
    compiler.Compiler().compile(one_step, str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    backend = Backend(tmp_path / "run", spec, run_params={}, store_env={})
    with pytest.raises(LauncherError, match=r'failed to read output parameter name="published_2"'):
        backend.run_task("clash", secret_tasks=set())
    assert "Traceback" not in backend.logs["clash"]  # the component itself succeeded


def test_the_double_stages_an_imported_artifact_from_the_object_store(
    tmp_path: Path, bucket: str, store_env: dict[str, str]
) -> None:
    """An importer task (``dsl.importer``, e.g. a dataset referenced in place) records the URI;
    the consumer's launcher downloads it from the object store into the pod."""

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def count(data: Input[Dataset]) -> int:
        import os

        return len(os.listdir(data.path))

    @dsl.pipeline(name="imported")
    def imported(uri: str) -> None:
        found = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
        count(data=found.output)

    storage.upload_bytes(b"a", f"s3://{bucket}/data/a.txt")
    storage.upload_bytes(b"b", f"s3://{bucket}/data/b.txt")
    path = tmp_path / "imported.yaml"
    compiler.Compiler().compile(imported, str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    backend = Backend(tmp_path / "run", spec, {"uri": f"s3://{bucket}/data"}, store_env)
    for name in schedule(spec["root"]["dag"]["tasks"]):
        backend.run_task(name, secret_tasks={"count"})
    assert backend.produced["count"].parameters == {"Output": 2}


def _secret_tasks(spec: dict[str, Any], platform: dict[str, Any]) -> set[str]:
    """Tasks whose executor gets the object-store secret (``secretAsEnv``)."""
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    labels = {label for label, cfg in executors.items() if cfg.get("secretAsEnv")}
    tasks = spec["root"]["dag"]["tasks"]
    label_of = {
        n: spec["components"][t["componentRef"]["name"]]["executorLabel"] for n, t in tasks.items()
    }
    return {n for n, label in label_of.items() if label in labels}


def _run_params(spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The root DAG's inputs: run arguments over IR defaults; optional ones without either are
    absent (null-filled from 2.5.0: kubeflow/pipelines@2.17.0 backend/src/v2/compiler/
    argocompiler/argo.go l.97-106)."""
    declared = spec["root"]["inputDefinitions"]["parameters"]
    unknown = set(given) - set(declared)
    assert not unknown, f"not pipeline parameters: {unknown}"
    params = {n: p["defaultValue"] for n, p in declared.items() if "defaultValue" in p}
    params.update(given)
    required = {
        n for n, p in declared.items() if "defaultValue" not in p and not p.get("isOptional")
    }
    assert required <= set(params), f"required parameters missing: {required - set(params)}"
    return params


def _check_outputs(name: str, component: dict[str, Any], backend: Backend) -> None:
    """Every declared output parameter has a value of its type; every output artifact has a
    file (the launcher only warns; a consumer's download then fails) and Struct metadata."""
    produced = backend.produced[name]
    outputs = component.get("outputDefinitions", {})
    for param, spec in outputs.get("parameters", {}).items():
        assert param in produced.parameters, f"{name}: no value for {param}"
        kind = _JSON_KIND[spec["parameterType"]]
        assert isinstance(produced.parameters[param], kind), f"{name}.{param}"
    for artifact, spec in outputs.get("artifacts", {}).items():
        metadata = produced.artifacts[artifact]["metadata"]
        json_format.ParseDict(metadata, struct_pb2.Struct())
        if spec["artifactType"]["schemaTitle"] not in _METADATA_ONLY:
            assert artifact not in produced.missing, f"{name}.{artifact}: no file written"
        if spec["artifactType"]["schemaTitle"] in _METADATA_ONLY:
            assert metadata, f"{name}.{artifact}: nothing logged"  # the UI would show nothing


def test_every_component_runs_under_the_driver_and_launcher(
    ir: tuple, tiny_shapes: Path, bucket: str, store_env: dict[str, str], tmp_path: Path
) -> None:
    """The whole IR, task by task in DAG order, each in a clean pod folder with the IR's own
    command: inputs resolved and outputs provisioned as the driver does, placeholders, staging
    and output collection as the launcher does (see :mod:`kfp_backend_double`). Tiny preset on
    the CPU; the dataset and the published model go through a real SeaweedFS."""
    spec, platform = ir
    storage.upload_dir(tiny_shapes, f"s3://{bucket}/datasets/shapes")
    params = _run_params(
        spec,
        {
            "dataset_uri": f"s3://{bucket}/datasets/shapes",
            "model_size": "tiny",
            "epochs": 1,
            "batch_size": 4,
            "grad_accum_steps": 1,
            "overrides": {"num_workers": 0, "multi_scale": False, "device": "cpu"},
            "publish_bucket": bucket,
            "model_name": "shapes-tiny",
        },
    )
    backend = Backend(tmp_path, spec, params, store_env)
    secret_tasks = _secret_tasks(spec, platform)
    tasks = spec["root"]["dag"]["tasks"]
    for name in schedule(tasks):
        backend.run_task(name, secret_tasks)
        _check_outputs(name, spec["components"][tasks[name]["componentRef"]["name"]], backend)
    assert set(backend.produced) == set(tasks)
    assert backend.produced["publish"].parameters["was_published"] is True
    published = backend.produced["publish"].parameters["uri"]
    assert storage.exists(f"{published}/manifest.json")
    assert backend.job_id in storage.read_bytes(f"{published}/model.json").decode()
