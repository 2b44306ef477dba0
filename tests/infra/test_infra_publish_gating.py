"""Publish gating a UI user can rely on (issue 12, finding M4): with defaults, a run never
replaces a better published model; a smoke run with ``publish_bucket=`` publishes nothing.
Also: a store that ignores conditional writes is refused, never trusted (issue 13)."""

from __future__ import annotations

import inspect
import json
import os
import uuid
from pathlib import Path

import pytest
import yaml

from components import publish as publish_component
from pipelines.compile import compile_pipeline
from pipelines.kfp_package import PipelinePackage, build_params
from pipelines.steps.common import StepError
from pipelines.steps.publish import LATEST, publish_model
from rfdetr import storage
from rfdetr.storage import ObjectStore
from rfdetr.storage.conditional import create_object


def _inputs(folder: Path) -> dict[str, Path]:
    (folder / "report").mkdir(parents=True)
    (folder / "model.pth").write_bytes(os.urandom(1000))
    (folder / "model.onnx").write_bytes(os.urandom(1000))
    (folder / "report" / "metrics.json").write_text("{}")
    return {
        "checkpoint": folder / "model.pth",
        "onnx": folder / "model.onnx",
        "report_dir": folder / "report",
        "staging": folder / "staging",
    }


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> PipelinePackage:
    return PipelinePackage.load(compile_pipeline(tmp_path_factory.mktemp("c") / "pipeline.yaml"))


def test_defaults_require_improvement_in_the_pipeline_the_component_and_the_step(
    package: PipelinePackage,
) -> None:
    spec = next(yaml.safe_load_all(Path(package.path).read_text()))
    compiled = spec["root"]["inputDefinitions"]["parameters"]["require_improvement"]
    assert compiled["defaultValue"] is True
    signature = inspect.signature(publish_component.python_func)
    assert signature.parameters["require_improvement"].default is True
    assert inspect.signature(publish_model).parameters["require_improvement"].default is True


def test_a_default_run_does_not_replace_a_better_published_model(
    tmp_path: Path, bucket: str
) -> None:
    best = publish_model(**_inputs(tmp_path / "a"), bucket=bucket, model_name="m", map_50_95=0.8)
    assert best.published
    worse = publish_model(**_inputs(tmp_path / "b"), bucket=bucket, model_name="m", map_50_95=0.3)
    assert not worse.published
    assert "does not beat the published 0.8000" in worse.reason
    latest = json.loads(storage.read_bytes(f"s3://{bucket}/m/{LATEST}"))
    assert latest["version"] == best.version and latest["map_50_95"] == 0.8


def test_a_smoke_run_with_an_empty_publish_bucket_publishes_nothing(
    package: PipelinePackage, tmp_path: Path, bucket: str
) -> None:
    params = build_params(package, ["dataset_uri=s3://d/x", "epochs=1", "publish_bucket="])
    assert params["publish_bucket"] == ""
    result = publish_model(**_inputs(tmp_path), bucket=params["publish_bucket"], map_50_95=0.9)
    assert not result.published and result.uri == ""
    decision = json.loads((tmp_path / "staging" / "decision.json").read_text())
    assert decision == {"published": False, "reason": result.reason, "uri": ""}
    assert "publishing is off" in result.reason


def test_a_store_that_ignores_if_none_match_is_refused(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SeaweedFS behind a client that drops the condition header, as a server that
    ignores it would: the second create succeeds, and create_object must say so."""
    store = ObjectStore.from_env()
    real_put = store.client._put_object

    def put_ignoring_conditions(bucket_name, object_name, data, headers, **kwargs):
        kept = {k: v for k, v in headers.items() if k.lower() != "if-none-match"}
        return real_put(bucket_name, object_name, data, kept, **kwargs)

    monkeypatch.setattr(store.client, "_put_object", put_ignoring_conditions)
    with pytest.raises(storage.StorageError, match="ignores If-None-Match"):
        create_object(b"{}", f"s3://{bucket}/claim.json", store=store)


@pytest.mark.parametrize(
    "name",
    ["mlpipeline/sub", "mlpipeline/../other", "UPPER", "ab", "a" * 64, "xn--bucket",
     "sthree-bucket", "bucket-s3alias", "bucket--ol-s3", "b..c", "192.168.1.1", "bucket "],
)  # fmt: skip
def test_a_publish_bucket_that_is_not_a_bucket_name_is_refused_before_any_write(
    name: str, tmp_path: Path, store_env: dict[str, str]
) -> None:
    """AWS bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules
    .html); ``mlpipeline/sub`` used to pass as bucket ``mlpipeline``, key ``sub/...``."""
    model = f"m-{uuid.uuid4().hex[:8]}"
    with pytest.raises((StepError, storage.InvalidURIError), match="bucket"):
        publish_model(**_inputs(tmp_path), bucket=name, model_name=model, map_50_95=0.9)
    client = ObjectStore.from_env().client
    assert not list(client.list_objects("mlpipeline", prefix=f"sub/{model}", recursive=True))
    assert not (tmp_path / "staging" / "model.json").exists()


def test_a_retry_of_the_same_run_finishes_its_own_unfinished_publish(
    tmp_path: Path, bucket: str
) -> None:
    """KFP's "Retry" re-runs a failed step with the same run id: an attempt that claimed the
    version and died before the manifest may finish it; any other run is still refused."""
    root = f"s3://{bucket}/m"
    claim = {"version": "v1", "run_id": "run-a", "claimed": "2026-01-01T00:00:00Z"}
    create_object(json.dumps(claim).encode(), f"{root}/.claims/v1.json")
    common = {"bucket": bucket, "model_name": "m", "version": "v1", "map_50_95": 0.5}
    with pytest.raises(StepError, match="claimed by run run-a"):
        publish_model(**_inputs(tmp_path / "other"), run_id="run-b", **common)
    retried = publish_model(**_inputs(tmp_path / "retry"), run_id="run-a", **common)
    assert retried.published and storage.exists(f"{root}/v1/manifest.json")
    with pytest.raises(StepError, match="published already"):
        publish_model(
            **_inputs(tmp_path / "again"), run_id="run-a", require_improvement=False, **common
        )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_map_never_publishes(value: float, tmp_path: Path, bucket: str) -> None:
    """``nan < min_map`` is False: the gate used to let a NaN evaluation through."""
    for require_improvement in (True, False):
        result = publish_model(
            **_inputs(tmp_path / str(require_improvement)), bucket=bucket, model_name="m",
            map_50_95=value, require_improvement=require_improvement,
        )  # fmt: skip
        assert not result.published and "not a finite number" in result.reason
    assert not storage.exists(f"s3://{bucket}/m/{LATEST}")
    with pytest.raises(StepError, match="min_map"):
        publish_model(**_inputs(tmp_path / "m"), bucket=bucket, map_50_95=0.5, min_map=value)
