"""The ``train`` component: the GPU training step."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def train(
    run_config: Input[Artifact],
    dataset: Input[Dataset],
    checkpoints: Output[Model],
    train_metrics: Output[Metrics],
    checkpoint_mirror_uri: str = "",
    run_id: str = "",
    train_engine: str = "pod",
    train_nodes: int = 1,
    gpus_per_node: int = 1,
    cluster_job: dict = {},  # noqa: B006 (a KFP constant input, never mutated)
):
    """Train RF-DETR (gradient accumulation, EMA, mixed precision on CUDA) as the config says.

    A retried attempt resumes: from ``checkpoint.pth`` in its work folder when the runner
    kept it, else from the previous attempt's files mirrored under ``checkpoint_mirror_uri``
    (synced every minute, on failure and on SIGTERM).

    Args:
        run_config: the resolved run config (JSON).
        dataset: the validated dataset (folder or reference).
        checkpoints: output; what select-checkpoint uses and the run's record:
            checkpoint_best_regular.pth, checkpoint_best_ema.pth (weights only), log.txt,
            results.json, run.yaml, metrics_plot.png. checkpoint.pth and the periodic
            checkpoint_<N>.pth stay in the mirror.
        train_metrics: output; best mAP50:95 and mAP50 (and their epoch), epochs completed, whether
            early stopping ended the run, and the last epoch's loss and validation mAP.
        checkpoint_mirror_uri: object-store prefix for the resume files (+ run id); empty: off.
        run_id: the pipeline run's id (for the mirror and telemetry).
        train_engine: pod: train in this pod; trainjob / pytorchjob: a Kubeflow job, awaited.
        train_nodes: nodes of that job (the pod engine takes 1).
        gpus_per_node: GPUs (processes) on each node of that job.
        cluster_job: the job's image, runtime, resources, secret and timeout (compile settings).
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.train import check_run_id, train_run
    from pipelines.steps.train_job import train_on_cluster

    with step_errors("train"):
        folders = (run_config.path, dataset.path, checkpoints.path)
        mirror = {"mirror_root": checkpoint_mirror_uri, "run_id": check_run_id(run_id)}
        if train_engine == "pod" and train_nodes == 1:
            outcome = train_run(*folders, **mirror)
        else:
            outcome = train_on_cluster(
                *folders,
                engine=train_engine,
                nodes=train_nodes,
                gpus_per_node=gpus_per_node,
                settings=cluster_job,
                **mirror,
            )
    for name, value in outcome.metrics().items():
        train_metrics.log_metric(name, value)
    checkpoints.metadata.update(outcome.model_metadata())
