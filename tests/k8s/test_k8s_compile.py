"""``rfdetr-pipeline compile --train-engine trainjob`` compiles, and its IR passes the
conformance checks (tests/conformance/test_conformance_ir.py: the parse of the vendored KFP
2.15.0 protos, strict but for the one field its driver drops, and the installed SDK's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from test_conformance_ir import (
    test_ir_parses_against_the_minimum_backend_protos_as_its_driver_does as parses_for_2_15,
)
from test_conformance_ir import (
    test_ir_parses_strictly_against_the_sdk_protos as parses_for_the_sdk,
)
from test_conformance_ui import (
    test_every_input_parameter_has_one_clean_line_of_description as described_for_the_ui,
)
from test_conformance_ui import (
    test_output_artifacts_do_not_take_a_return_fields_text as outputs_described_for_the_ui,
)


@pytest.fixture(scope="module")
def multi_node_ir(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    args = ["--train-nodes", "2", "--gpus-per-node", "8", "--train-engine", "trainjob"]
    assert main(["compile", *args, "--output", str(path)]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform


def test_k8s_multi_node_ir_is_conformant(multi_node_ir: tuple[dict, dict]) -> None:
    parses_for_2_15(multi_node_ir)
    parses_for_the_sdk(multi_node_ir)
    described_for_the_ui(multi_node_ir)


def test_k8s_multi_node_ir_wires_the_job_into_train(multi_node_ir: tuple[dict, dict]) -> None:
    spec, platform = multi_node_ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_nodes"]["defaultValue"] == 2
    assert params["gpus_per_node"]["defaultValue"] == 8
    train = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train["train_engine"]["runtimeValue"]["constant"] == "trainjob"
    assert train["train_nodes"]["componentInputParameter"] == "train_nodes"
    job = train["cluster_job"]["runtimeValue"]["constant"]
    assert job["runtime"] == "TrainingRuntime/rfdetr-torch-distributed" and job["delete"] is True
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert "nodeSelector" not in executor and "tolerations" not in executor  # no GPU: it waits
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert "accelerator" not in resources


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-nodes", "2"], "needs --train-engine"),
        (["--train-nodes", "0", "--train-engine", "trainjob"], "expected 1 or more"),
        (["--gpus-per-node", "-1", "--train-engine", "trainjob"], "expected 0 or more"),
    ],
)
def test_k8s_compile_refuses_an_impossible_job(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", *args, "--output", str(tmp_path / "p.yaml")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_k8s_deploy_step_runs_only_when_publish_published(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    assert main(["compile", "--deploy", "--serve-replicas", "0:3", "--output", str(path)]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    parses_for_2_15((spec, platform))
    parses_for_the_sdk((spec, platform))
    # The UI checks, less the compiler's own channels of the dsl.If sub-DAG
    # ("pipelinechannel--*" inputs of comp-condition-1, which have no docstring to describe them).
    steps = {k: v for k, v in spec["components"].items() if not k.startswith("comp-condition")}
    described_for_the_ui(({**spec, "components": steps}, platform))
    outputs_described_for_the_ui(({**spec, "components": steps}, platform))
    (branch,) = [t for n, t in spec["root"]["dag"]["tasks"].items() if n.startswith("condition")]
    condition = branch["triggerPolicy"]["condition"]
    assert "publish-was_published" in condition and "true" in condition
    inner = spec["components"][branch["componentRef"]["name"]]["dag"]["tasks"]["deploy"]
    params = inner["inputs"]["parameters"]
    assert params["min_replicas"]["runtimeValue"]["constant"] == 0
    assert params["max_replicas"]["runtimeValue"]["constant"] == 3
    assert "canary_traffic_percent" in spec["root"]["inputDefinitions"]["parameters"]
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-deploy"]
    assert executor["secretAsEnv"]  # the predictor's and the step's object-store keys


def test_k8s_no_deploy_step_unless_asked(multi_node_ir: tuple[dict, dict]) -> None:
    spec, _ = multi_node_ir
    assert "comp-deploy" not in spec["components"]
