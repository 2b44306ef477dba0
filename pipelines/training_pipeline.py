"""The RF-DETR training pipeline: wiring only (the steps are :mod:`components`,
the cluster settings :mod:`pipelines._platform`).

    resolve_config -> fetch_dataset -> validate_dataset -> train -> select_checkpoint
        -> evaluate, export_onnx -> publish

``rfdetr_training`` is the pipeline with the default cluster settings (``kfp dsl compile --py
pipelines/training_pipeline.py --function rfdetr_training`` works); :func:`build_pipeline`
makes it for other settings, e.g. ``Platform.for_local()`` in ``run-local``.
"""

# kfp 2.17 reads parameter types from typing.Optional, not from `int | None`.
# ruff: noqa: UP045

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Model, PipelineTask
from kfp.dsl.graph_component import GraphComponent

from components import (
    deploy,
    evaluate,
    export_onnx,
    fetch_dataset,
    publish,
    resolve_config,
    select_checkpoint,
    train,
    validate_dataset,
)
from pipelines import _platform as platform_settings
from pipelines._platform import Platform
from pipelines.steps.common import PIPELINE_NAME

DESCRIPTION = (
    "Fine-tune RF-DETR on a COCO or YOLO dataset from the object store: validate, train (GPU), "
    "select the best of regular/EMA, evaluate, export a verified ONNX file and publish them "
    "with a sha256 manifest."
)


class PipelineOutputs(NamedTuple):
    model: Model
    onnx_model: Model
    report: Artifact
    map_50_95: float
    published_uri: str


def build_pipeline(platform: Optional[Platform] = None) -> GraphComponent:
    """The pipeline with ``platform``'s cluster settings (default: :class:`Platform()`)."""
    p = platform or Platform()

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def rfdetr_training(
        dataset_uri: str,
        model_size: str = "nano",
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        grad_accum_steps: Optional[int] = None,
        lr: Optional[float] = None,
        resolution: Optional[int] = None,
        use_ema: Optional[bool] = None,
        early_stopping: Optional[bool] = None,
        overrides: Optional[dict] = None,
        pretrain_weights: str = "",
        publish_bucket: str = "mlpipeline",
        model_name: str = "",
        model_version: str = "",
        min_map: float = 0.0,
        require_improvement: bool = True,
        checkpoint_mirror_uri: str = "s3://mlpipeline/rfdetr/checkpoint-mirror",
        quantize: str = "",
        train_nodes: int = p.train_nodes,
        gpus_per_node: int = p.gpus_per_node,
        deploy_name: str = "",
        canary_traffic_percent: int = 0,
    ) -> PipelineOutputs:
        """Train, evaluate, export and publish an RF-DETR model.

        Args:
            dataset_uri: s3:// or minio:// prefix of a COCO/YOLO dataset (train/, valid/, test/)
            model_size: nano, small, medium, large, base, seg-nano ... seg-2xlarge; tiny: CPU tests.
            epochs: training epochs; blank: the model preset's.
            batch_size: images per step per GPU; blank: the model preset's.
            grad_accum_steps: steps per optimizer update; blank: the model preset's.
            lr: learning rate; blank: the model preset's.
            resolution: input side in pixels; blank: the model preset's.
            use_ema: keep an EMA of the weights (the better one is shipped); blank: preset's.
            early_stopping: stop when validation mAP50:95 stops improving; blank: preset's.
            overrides: any other training option, e.g. {"train.warmup_epochs": 1}.
            pretrain_weights: empty: official COCO weights (tiny: random); random; or a URI/path.
            publish_bucket: bucket the model is published to; empty: not published.
            model_name: the model's folder in the bucket; empty: rfdetr-<model_size>.
            model_version: the version's folder; empty: YYYYMMDD-HHMMSS-<run id>.
            min_map: publish only when the evaluation mAP50:95 is at least this.
            require_improvement: publish only when it also beats the published model.
            checkpoint_mirror_uri: where training mirrors its resume files for retries; empty: off.
            quantize: int8: also an int8 ONNX file calibrated on train images; empty: off.
            train_nodes: nodes of a multi-node train (compiled with --train-engine); 1: one pod.
            gpus_per_node: GPUs (processes) per node of a multi-node train.
            deploy_name: InferenceService name (compiled with --deploy); empty: the model's.
            canary_traffic_percent: traffic share of a newly deployed version; 0: all of it.
        """
        config = resolve_config(
            dataset_uri=dataset_uri,
            model_size=model_size,
            epochs=epochs,
            batch_size=batch_size,
            grad_accum_steps=grad_accum_steps,
            lr=lr,
            resolution=resolution,
            use_ema=use_ema,
            early_stopping=early_stopping,
            pretrain_weights=pretrain_weights,
            overrides=overrides,
        )
        fetched = fetch_dataset(dataset_uri=dataset_uri).after(config)
        checked = validate_dataset(dataset=fetched.outputs["dataset"])
        trained = train(
            run_config=config.outputs["run_config"],
            dataset=fetched.outputs["dataset"],
            checkpoint_mirror_uri=checkpoint_mirror_uri,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            train_engine=p.train_engine,
            train_nodes=train_nodes,
            gpus_per_node=gpus_per_node,
            cluster_job=platform_settings.train_job_settings(p),
        ).after(checked)
        selected = select_checkpoint(checkpoints=trained.outputs["checkpoints"])
        evaluated = evaluate(
            model=selected.outputs["model"],
            dataset=fetched.outputs["dataset"],
            run_config=config.outputs["run_config"],
        )
        exported = export_onnx(
            model=selected.outputs["model"], dataset=fetched.outputs["dataset"], quantize=quantize
        )
        published = publish(
            model=selected.outputs["model"],
            onnx_model=exported.outputs["onnx_model"],
            report=evaluated.outputs["report"],
            map_50_95=evaluated.outputs["Output"],
            bucket=publish_bucket,
            model_name=model_name,
            version=model_version,
            min_map=min_map,
            require_improvement=require_improvement,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        if p.deploy and not p.local:
            with dsl.If(published.outputs["was_published"] == True, "published"):  # noqa: E712
                served = deploy(
                    published_uri=published.outputs["uri"],
                    deploy_name=deploy_name,
                    canary_traffic_percent=canary_traffic_percent,
                    min_replicas=p.serve_replicas[0],
                    max_replicas=p.serve_replicas[1],
                    serving=platform_settings.serving_settings(p),
                )
                if p.display_names:
                    served.set_display_name("Deploy")
                platform_settings.common(served, p, p.light)
                platform_settings.use_object_store(served, p)
                platform_settings.no_cache(served)
        _configure(
            p,
            {
                "config": config,
                "fetched": fetched,
                "checked": checked,
                "trained": trained,
                "selected": selected,
                "evaluated": evaluated,
                "exported": exported,
                "published": published,
            },
        )
        return PipelineOutputs(
            model=selected.outputs["model"],
            onnx_model=exported.outputs["onnx_model"],
            report=evaluated.outputs["report"],
            map_50_95=evaluated.outputs["Output"],
            published_uri=published.outputs["uri"],
        )

    return rfdetr_training


DISPLAY_NAMES: dict[str, str] = {
    "config": "Resolve config",
    "fetched": "Fetch dataset",
    "checked": "Validate dataset",
    "trained": "Train",
    "selected": "Select checkpoint",
    "evaluated": "Evaluate",
    "exported": "Export ONNX",
    "published": "Publish",
}


def _configure(p: Platform, tasks: dict[str, PipelineTask]) -> None:
    """Display names and :mod:`pipelines._platform` settings of each task."""
    ps = platform_settings
    if p.display_names and not p.local:  # kfp.local warns that they do nothing there
        for key, name in DISPLAY_NAMES.items():
            tasks[key].set_display_name(name)
    for key in ("config", "checked", "selected", "published"):
        ps.common(tasks[key], p, p.light)
    for key in ("fetched", "exported"):
        ps.common(tasks[key], p, p.export)
    distributed = p.train_engine != "pod"  # the step pod only follows a job
    ps.common(tasks["trained"], p, p.light if distributed else p.train)
    ps.common(tasks["evaluated"], p, p.evaluate)
    for key in ("fetched", "checked", "trained", "evaluated", "exported", "published"):  # by ref.
        ps.use_object_store(tasks[key], p)
    ps.use_gpus(tasks["trained"], p, 0 if distributed else p.train_gpus)
    ps.use_gpus(tasks["evaluated"], p, p.eval_gpus)
    ps.retry_training(tasks["trained"], p)
    ps.deadline(tasks["trained"], p, p.train_timeout_s)
    ps.deadline(tasks["evaluated"], p, p.eval_timeout_s)
    ps.no_cache(tasks["fetched"])
    ps.no_cache(tasks["published"])


rfdetr_training = build_pipeline()
