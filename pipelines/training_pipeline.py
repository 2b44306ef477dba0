"""The RF-DETR training pipeline: wiring only (steps: :mod:`components`; cluster settings:
:mod:`pipelines._platform`; parameters: :mod:`pipelines.parameters`).

    resolve_config -> fetch_dataset -> validate_dataset -> train -> select_checkpoint
        -> evaluate, export_onnx -> publish [-> deploy]

``rfdetr_training`` has the default cluster settings (``kfp dsl compile --py ... --function
rfdetr_training`` works); :func:`build_pipeline` makes it for others.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes
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
from pipelines import parameters
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


def build_pipeline(platform: Platform | None = None) -> GraphComponent:
    """The pipeline with ``platform``'s cluster settings (default: :class:`Platform()`)."""
    p = platform or Platform()
    signature = parameters.pipeline_signature(PipelineOutputs, p)

    def rfdetr_training(*args: Any, **kwargs: Any) -> PipelineOutputs:
        params = signature.bind(*args, **kwargs).arguments  # KFP passes every parameter
        config = resolve_config(**{k.name: params[k.name] for k in parameters.CONFIG_INPUTS})
        run_config = config.outputs["run_config"]
        fetched = fetch_dataset(dataset_uri=params["dataset_uri"]).after(config)
        dataset = fetched.outputs["dataset"]
        checked = validate_dataset(dataset=dataset)
        trained = train(
            run_config=run_config,
            dataset=dataset,
            checkpoint_mirror_uri=params["checkpoint_mirror_uri"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            train_engine=p.train_engine,
            train_nodes=params["train_nodes"],
            gpus_per_node=params["gpus_per_node"],
            cluster_job=platform_settings.train_job_settings(p),
        ).after(checked)
        selected = select_checkpoint(checkpoints=trained.outputs["checkpoints"])
        model = selected.outputs["model"]
        evaluated = evaluate(model=model, dataset=dataset, run_config=run_config)
        exported = export_onnx(model=model, dataset=dataset, quantize=params["quantize"])
        onnx, report = exported.outputs["onnx_model"], evaluated.outputs["report"]
        published = publish(
            model=model,
            onnx_model=onnx,
            report=report,
            map_50_95=evaluated.outputs["Output"],
            bucket=params["publish_bucket"],
            model_name=params["model_name"],
            version=params["model_version"],
            min_map=params["min_map"],
            require_improvement=params["require_improvement"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        steps = (config, fetched, checked, trained, selected, evaluated, exported, published)
        tasks = dict(zip(DISPLAY_NAMES, steps, strict=False))  # + served, below
        if p.deploy and not p.local:
            with dsl.If(published.outputs["was_published"] == True, "published"):  # noqa: E712
                tasks["served"] = deploy(
                    published_uri=published.outputs["uri"],
                    deploy_name=params["deploy_name"],
                    canary_traffic_percent=params["canary_traffic_percent"],
                    min_replicas=p.serve_replicas[0],
                    max_replicas=p.serve_replicas[1],
                    serving=platform_settings.serving_settings(p),
                )
        _configure(p, tasks)
        score, uri = evaluated.outputs["Output"], published.outputs["uri"]
        return PipelineOutputs(model, onnx, report, score, uri)

    rfdetr_training.__signature__ = signature  # type: ignore[attr-defined]
    rfdetr_training.__doc__ = parameters.DOCSTRING
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(rfdetr_training)


DISPLAY_NAMES: dict[str, str] = {
    "config": "Resolve config",
    "fetched": "Fetch dataset",
    "checked": "Validate dataset",
    "trained": "Train",
    "selected": "Select checkpoint",
    "evaluated": "Evaluate",
    "exported": "Export ONNX",
    "published": "Publish",
    "served": "Deploy",  # only with Platform.deploy
}


def _configure(p: Platform, tasks: dict[str, PipelineTask]) -> None:
    """Display names and :mod:`pipelines._platform` settings of each task."""
    ps = platform_settings
    if p.display_names and not p.local:  # kfp.local warns that they do nothing there
        for key, task in tasks.items():
            task.set_display_name(DISPLAY_NAMES[key])
    distributed = p.train_engine != "pod"  # the step pod only follows a job
    resources = dict.fromkeys(tasks, p.light) | {"fetched": p.export, "exported": p.export}
    resources |= {"trained": p.light if distributed else p.train, "evaluated": p.evaluate}
    for key, task in tasks.items():
        ps.common(task, p, resources[key])
        if key not in ("config", "selected"):  # the dataset by reference, the model's files
            ps.use_object_store(task, p)
        if key in ("fetched", "published", "served"):  # mutable external data: never cached
            task.set_caching_options(enable_caching=False)
    ps.use_gpus(tasks["trained"], p, 0 if distributed else p.train_gpus)
    ps.use_gpus(tasks["evaluated"], p, p.eval_gpus)
    if p.train_retries > 0:  # each attempt resumes
        tasks["trained"].set_retry(
            num_retries=p.train_retries,
            backoff_duration=p.retry_backoff,
            backoff_factor=p.retry_backoff_factor,
            backoff_max_duration=p.retry_backoff_max,
        )
    for key, seconds in (("trained", p.train_timeout_s), ("evaluated", p.eval_timeout_s)):
        if seconds and not p.local:  # each attempt's activeDeadlineSeconds; falsy: none
            kubernetes.set_timeout(tasks[key], seconds=seconds)


rfdetr_training = build_pipeline()
