"""What the KFP UI shows of the pipeline (M12).

The KFP 2.17 frontend labels each run parameter `` `${k} - ${type}` `` and never shows its
``description`` (kubeflow/pipelines@2.17.0 frontend/src/components/NewRunParametersV2.tsx
l.164); the pipeline and version pickers show the description given at upload
(frontend/src/pages/NewRunV2.tsx l.777, l.790; backend/src/apiserver/server/
pipeline_upload_server.go l.151, l.331). So the upload description carries the usage, and the
IR's descriptions (read by other tools and by people reading the YAML) stay one clean line.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kfp_backend_double import embedded_function

from pipelines.kfp_api import _content_hash, content_description
from pipelines.kfp_package import PipelinePackage

_GARBLED = re.compile(r"\n|\s{2,}|^None\b|^[^a-zA-Z0-9`]")


def _input_parameters(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"<where>.<name>": spec}`` of every input parameter: the pipeline's and each step's."""
    found = {f"pipeline.{n}": p for n, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    for comp, component in spec["components"].items():
        for name, param in component.get("inputDefinitions", {}).get("parameters", {}).items():
            found[f"{comp}.{name}"] = param
    return found


def test_every_input_parameter_has_one_clean_line_of_description(ir: tuple) -> None:
    """No newline (continuation lines of a docstring), no doubled spaces, no sentence that only
    makes sense next to another parameter's ("None: the preset's (as for every knob below)")."""
    spec, _ = ir
    params = _input_parameters(spec)
    assert len(params) > 17
    for where, param in params.items():
        text = param.get("description", "")
        assert text, f"{where}: no description"
        assert not _GARBLED.search(text), f"{where}: {text!r}"
        assert len(text) <= 100, f"{where}: {len(text)} characters"


def test_output_artifacts_do_not_take_a_return_fields_text(ir: tuple) -> None:
    """The SDK gives an output artifact the ``Returns:`` text of a return field of the same
    name (the old ``publish``: artifact ``published`` described as "whether the model was
    published."); no artifact is described by its step's ``Returns:`` section."""
    spec, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    for comp, component in spec["components"].items():
        func = embedded_function(executors[component["executorLabel"]]["container"])
        doc = inspect.getdoc(func) or ""
        returns = doc.split("Returns:", 1)[1] if "Returns:" in doc else ""
        returns = " ".join(returns.split())
        outputs = component.get("outputDefinitions", {})
        for name, artifact in outputs.get("artifacts", {}).items():
            assert name not in outputs.get("parameters", {}), f"{comp}: {name} is both"
            text = artifact.get("description")
            assert not text or " ".join(text.split()) not in returns, f"{comp}.{name}: {text!r}"


def test_upload_description_carries_usage_and_the_content_hash(ir_path: Path) -> None:
    """What the pickers show: the pipeline's purpose, the required parameter, where the help
    is; and, last, the content-hash mark ``--reuse-version`` finds the version by."""
    package = PipelinePackage.load(ir_path)
    text = content_description(package)
    assert text.startswith(package.description) and "Fine-tune RF-DETR" in text
    assert "Required: dataset_uri." in text and "README" in text
    assert text.endswith(package.sha256) and "\n" not in text
    assert _content_hash(SimpleNamespace(description=text)) == package.sha256
