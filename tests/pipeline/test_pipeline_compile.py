"""The compiled pipeline's structure: tasks and order, GPUs, retries, secrets, /dev/shm, caching.

Structural assertions on the compiled YAML (both documents), not a golden file.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import main
from pipelines.compile import compile_pipeline
from pipelines.parameters import (
    CONFIG_INPUTS,
    PARAMETERS,
    REQUIRED,
    markdown_table,
    readme_table,
)

ORDER = [
    "resolve-config",
    "fetch-dataset",
    "validate-dataset",
    "train",
    "select-checkpoint",
    "evaluate",
    "export-onnx",
    "publish",
]
# the steps that read the dataset by reference download it from the store themselves
STORE_TASKS = (
    "fetch-dataset",
    "validate-dataset",
    "train",
    "evaluate",
    "export-onnx",
    "publish",
)


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    return _load(compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml"))


def _container(spec: dict[str, Any], task: str) -> dict[str, Any]:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


def test_pipeline_compile_tasks_run_in_order(compiled: tuple) -> None:
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(ORDER)
    deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert deps["resolve-config"] == set()
    assert deps["fetch-dataset"] == {"resolve-config"}  # a bad config fails before the download
    assert deps["validate-dataset"] == {"fetch-dataset"}
    assert "validate-dataset" in deps["train"]  # no GPU before the data is known good
    assert deps["select-checkpoint"] == {"train"}
    assert "select-checkpoint" in deps["evaluate"]
    assert deps["export-onnx"] == {"select-checkpoint", "fetch-dataset"}  # int8 calibration
    assert {"evaluate", "export-onnx", "select-checkpoint"} <= deps["publish"]
    # every task's dependencies come earlier in ORDER: the listed order is a valid schedule
    for name, needs in deps.items():
        assert all(ORDER.index(need) < ORDER.index(name) for need in needs), name


def test_pipeline_compile_train_and_evaluate_request_gpus(compiled: tuple) -> None:
    spec, k8s = compiled
    for task in ("train", "evaluate"):
        accelerator = _container(spec, task)["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu"
        assert accelerator["resourceCount"] == "1"
        # no node selector by default: the GPU limit and the toleration place the pod (a label
        # like nvidia.com/gpu.present exists only where GPU Feature Discovery runs)
        assert "nodeSelector" not in k8s[f"exec-{task}"]
        assert k8s[f"exec-{task}"]["activeDeadlineSeconds"] == str(7 * 24 * 3600)
        assert k8s[f"exec-{task}"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert k8s[f"exec-{task}"]["emptyDirMounts"] == [
            {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "16Gi"}
        ]
    train = _container(spec, "train")["resources"]
    assert train["resourceCpuRequest"] == "8"
    assert train["resourceMemoryRequest"] == "32Gi"
    for task in ("resolve-config", "validate-dataset", "select-checkpoint", "publish"):
        assert "accelerator" not in _container(spec, task).get("resources", {}), task
        assert "nodeSelector" not in k8s.get(f"exec-{task}", {}), task


def test_pipeline_compile_train_retries_with_backoff(compiled: tuple) -> None:
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train"]["retryPolicy"] == {
        "maxRetryCount": 2,
        "backoffDuration": "120s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": f"{7 * 24 * 3600}s",
    }
    assert [name for name, task in tasks.items() if "retryPolicy" in task] == ["train"]


def test_pipeline_compile_store_credentials_come_from_the_kfp_secret(compiled: tuple) -> None:
    spec, k8s = compiled
    for task in STORE_TASKS:
        (secret,) = k8s[f"exec-{task}"]["secretAsEnv"]
        assert secret["secretName"] == "mlpipeline-minio-artifact"
        assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == {
            "accesskey": "AWS_ACCESS_KEY_ID",
            "secretkey": "AWS_SECRET_ACCESS_KEY",
        }
        env = {e["name"]: e["value"] for e in _container(spec, task)["env"]}
        assert env["OBJECTSTORECONFIG_HOST"] == "minio-service.kubeflow"
        assert env["OBJECTSTORECONFIG_PORT"] == "9000"
        assert env["OBJECTSTORECONFIG_SECURE"] == "false"
    for task in ("resolve-config", "select-checkpoint"):
        assert "secretAsEnv" not in k8s.get(f"exec-{task}", {}), task
    text = yaml.safe_dump(spec)
    assert "SECRET_ACCESS_KEY\n" not in text.replace("envVar: AWS_SECRET_ACCESS_KEY\n", "")


def test_pipeline_compile_caching_is_off_for_fetch_and_publish(compiled: tuple) -> None:
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        expected = name not in ("fetch-dataset", "publish")
        assert bool(task["cachingOptions"].get("enableCache")) is expected, name


def test_pipeline_compile_components_use_the_versioned_image_and_install_nothing(
    compiled: tuple,
) -> None:
    from components import RFDETR_IMAGE
    from rfdetr import __version__

    spec, _ = compiled
    assert RFDETR_IMAGE.endswith(f":{__version__}")
    for name in ORDER:
        container = _container(spec, name)
        gpu = name in ("train", "evaluate")  # the others run on the CPU image built beside it
        assert container["image"] == (RFDETR_IMAGE if gpu else f"{RFDETR_IMAGE}-cpu"), name
        command = " ".join(container["command"] + container.get("args", []))
        assert "pip install" not in command, name  # install_kfp_package=False, no packages
        assert "executor_main" in command


def test_pipeline_compile_parameters_default_to_the_preset(compiled: tuple) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["dataset_uri"] and not params["dataset_uri"].get(
        "isOptional"
    )
    for knob in (
        "epochs",
        "batch_size",
        "grad_accum_steps",
        "lr",
        "resolution",
        "use_ema",
        "early_stopping",
        "overrides",
    ):
        assert params[knob]["isOptional"] and "defaultValue" not in params[knob], knob
    assert params["model_size"]["defaultValue"] == "nano"
    assert params["publish_bucket"]["defaultValue"] == "mlpipeline"
    assert params["min_map"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["overrides"]["parameterType"] == "STRUCT"
    # docstrings' Args reach the spec (shown in the UI)
    train_inputs = spec["components"]["comp-train"]["inputDefinitions"]["artifacts"]
    assert "validated dataset" in train_inputs["dataset"]["description"]


def test_pipeline_compile_parameters_are_the_declared_ones(compiled: tuple) -> None:
    """Pipeline inputs and resolve-config's inputs come from `pipelines.parameters`."""
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert list(params) == sorted(p.name for p in PARAMETERS)
    for p in PARAMETERS:
        assert params[p.name]["description"] == p.help, p.name
        unset = p.default is None or p.default is REQUIRED
        assert params[p.name].get("defaultValue") == (None if unset else p.default), p.name
    resolve = spec["components"]["comp-resolve-config"]["inputDefinitions"]["parameters"]
    assert {name: value["description"] for name, value in resolve.items()} == {
        p.name: p.help for p in CONFIG_INPUTS
    }
    task = spec["root"]["dag"]["tasks"]["resolve-config"]["inputs"]["parameters"]
    assert {name: value["componentInputParameter"] for name, value in task.items()} == {
        p.name: p.name for p in CONFIG_INPUTS
    }


def test_pipeline_readme_parameter_table_is_the_declaration() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert readme_table(readme) == markdown_table(), "run: python -m pipelines.parameters README.md"


def test_pipeline_compile_parses_as_strict_protobuf(tmp_path: Path) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())


def test_pipeline_compile_cli_options_change_the_platform(tmp_path: Path) -> None:
    out = tmp_path / "custom.yaml"
    options = shlex.split(
        "--image registry.example/rfdetr:abc123 --train-gpus 2 --eval-gpus 0 --accelerator "
        "amd.com/gpu --node-selector pool=gpu --toleration dedicated=ml:NoExecute --secret "
        "my-s3 --store-host s3.example --store-port 443 --store-secure --pushgateway-url "
        "http://pgw:9091 --train-retries 0 --train-timeout 36h --eval-timeout 0 "
        "--no-display-names --shm-size 7.5G"
    )
    code = main(["compile", "--output", str(out), *options])
    assert code == 0
    spec, k8s = _load(out)
    train = _container(spec, "train")
    assert train["image"] == "registry.example/rfdetr:abc123"
    assert train["resources"]["accelerator"] == {
        "resourceType": "amd.com/gpu",
        "resourceCount": "2",
        "type": "amd.com/gpu",
        "count": "2",
    }
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert k8s["exec-train"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
    ]
    assert k8s["exec-train"]["secretAsEnv"][0]["secretName"] == "my-s3"
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env["OBJECTSTORECONFIG_HOST"] == "s3.example"
    assert env["OBJECTSTORECONFIG_SECURE"] == "true"
    assert env["PUSHGATEWAY_URL"] == "http://pgw:9091"
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["train"]
    assert k8s["exec-train"]["activeDeadlineSeconds"] == str(36 * 3600)
    assert "activeDeadlineSeconds" not in k8s["exec-evaluate"]  # --eval-timeout 0: none
    tasks = spec["root"]["dag"]["tasks"]
    assert all(task["taskInfo"]["name"] == name for name, task in tasks.items())
    evaluate = _container(spec, "evaluate")
    assert "accelerator" not in evaluate["resources"]  # --eval-gpus 0: CPU
    assert "nodeSelector" not in k8s["exec-evaluate"]
    assert k8s["exec-evaluate"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert k8s["exec-train"]["emptyDirMounts"][0]["sizeLimit"] == "7.5G"  # a decimal quantity


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--toleration", "nvidia.com/gpu"], "expected KEY[=VALUE]:EFFECT"),
        (["--node-selector", "no-value"], "expected LABEL=VALUE"),
        (["--train-gpus", "-1"], "expected 0 or more"),
        (["--train-timeout", "a week"], "expected e.g. 3600, 90m, 36h or 7d"),
        (["--retry-window", "0"], "--retry-window: expected a duration above 0"),
        # KFP's driver builds the /dev/shm emptyDir with resource.MustParse(sizeLimit)
        # (kubeflow/pipelines@2.17.0 backend/src/v2/driver/k8s.go, EmptyDirMounts): "16GB" is
        # no Kubernetes quantity, so it compiled and the train step's driver panicked.
        (["--shm-size", "16GB"], "--shm-size '16GB': not a Kubernetes quantity"),
        (["--store-port", "99999"], "--store-port 99999: expected a TCP port (1-65535)"),
        # Each of these compiled, and failed only on the cluster: prometheus_client's
        # push_to_gateway needs a URL; the kubelet pulls an image reference
        # (distribution/reference v0.6.0 regexp.go); a GPU is an extended resource DOMAIN/NAME
        # (k8s.io/apimachinery validation.go IsQualifiedName).
        (["--pushgateway-url", "pushgateway"], "--pushgateway-url 'pushgateway': expected an http"),
        (["--image", "Registry/RFDETR:1"], "--image 'Registry/RFDETR:1': not an image reference"),
        (["--cpu-image", "rfdetr:1 cpu"], "--cpu-image 'rfdetr:1 cpu': not an image reference"),
        (["--accelerator", "gpu"], "--accelerator 'gpu': expected an extended resource"),
        # kfp 2.17's own messages named neither the option nor the value
        (["--train-cpu", "-3"], "--train-cpu '-3': expected a CPU amount, e.g. 8, 2.5 or 500m"),
        (["--retry-backoff", "-5"], "--retry-backoff '-5': expected a duration of 0 or more"),
    ],
)
def test_pipeline_compile_cli_rejects_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["compile", "--output", str(tmp_path / "x.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.yaml").exists()


def test_pipeline_compile_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys, pipelines.training_pipeline as p; from kfp import compiler; "
        f"compiler.Compiler().compile(p.rfdetr_training, {str(tmp_path / 'p.yaml')!r}); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
