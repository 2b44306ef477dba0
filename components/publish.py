"""The ``publish`` component: the model, its ONNX file and reports to the object store."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def publish(
    model: Input[Model],
    onnx_model: Input[Model],
    report: Input[Artifact],
    map_50_95: float,
    published: Output[Artifact],
    bucket: str,
    model_name: str,
    version: str = "",
    min_map: float = 0.0,
    require_improvement: bool = True,
    run_id: str = "",
) -> NamedTuple("PublishOutputs", [("uri", str), ("version", str), ("was_published", bool)]):
    """Publish the model, ONNX file and report (:mod:`pipelines.steps.publish` says how).

    Args:
        model: the selected checkpoint folder.
        onnx_model: the ONNX folder.
        report: the evaluation report folder.
        map_50_95: the evaluation's mAP50:95 (what the gate compares).
        published: output; the files uploaded with ``manifest.json``, and ``decision.json``
            (published or not, and why).
        bucket: destination bucket (must exist); empty: do not publish.
        model_name: the model's folder in the bucket; empty: ``rfdetr-<model size>``.
        version: the version's folder (never overwritten); empty: ``YYYYMMDD-HHMMSS-<run id>``.
        min_map: publish only when mAP50:95 is at least this.
        require_improvement: publish only when mAP50:95 also beats the published model's.
        run_id: the pipeline run's id (recorded in ``model.json``).

    Returns:
        uri: the published prefix (empty when not published).
        version: the version folder chosen for this model.
        was_published: whether the model was published.
    """
    from pathlib import Path

    from pipelines.steps.common import single_file, step_errors
    from pipelines.steps.publish import publish_model

    with step_errors("publish"):
        result = publish_model(
            single_file(model.path, "*.pth", "checkpoint"),
            single_file(onnx_model.path, "*.onnx", "ONNX file"),
            Path(report.path),
            Path(published.path),
            bucket=bucket,
            model_name=model_name,
            version=version,
            map_50_95=map_50_95,
            model_size=model.metadata.get("model_size", ""),
            min_map=min_map,
            require_improvement=require_improvement,
            run_id=run_id,
            extra={
                "class_names": model.metadata.get("class_names", []),
                "evaluated_split": report.metadata.get("split", ""),
            },
        )
    published.metadata.update(result.metadata())
    return result.outputs()
