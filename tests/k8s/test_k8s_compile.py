"""``rfdetr-pipeline compile --train-engine trainjob`` compiles, and its IR passes the
conformance checks (tests/conformance/test_conformance_ir.py: strict parse against the vendored
KFP 2.15.0 protos and the installed SDK's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from test_conformance_ir import (
    test_ir_parses_strictly_against_the_minimum_backend_protos as parses_for_the_minimum_backend,
)
from test_conformance_ir import (
    test_ir_parses_strictly_against_the_sdk_protos as parses_for_the_sdk,
)


@pytest.fixture(scope="module")
def multi_node_ir(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    args = ["--train-nodes", "2", "--gpus-per-node", "8", "--train-engine", "trainjob"]
    assert main(["compile", *args, "--output", str(path)]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform


def test_k8s_multi_node_ir_is_conformant(multi_node_ir: tuple[dict, dict]) -> None:
    parses_for_the_minimum_backend(multi_node_ir)
    parses_for_the_sdk(multi_node_ir)


def test_k8s_multi_node_ir_wires_the_job_into_train(multi_node_ir: tuple[dict, dict]) -> None:
    spec, platform = multi_node_ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_nodes"]["defaultValue"] == 2
    assert params["gpus_per_node"]["defaultValue"] == 8
    train = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train["train_engine"]["runtimeValue"]["constant"] == "trainjob"
    assert train["train_nodes"]["componentInputParameter"] == "train_nodes"
    job = train["cluster_job"]["runtimeValue"]["constant"]
    assert job["runtime"] == "torch-distributed" and job["delete"] is True
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
