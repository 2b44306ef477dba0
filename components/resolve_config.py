"""The ``resolve_config`` component: pipeline parameters -> validated ``RunConfig`` JSON."""

# kfp 2.17 reads parameter types from typing.Optional, not from `int | None`.
# ruff: noqa: UP045

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def resolve_config(
    dataset_uri: str,
    model_size: str,
    run_config: Output[Artifact],
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    grad_accum_steps: Optional[int] = None,
    lr: Optional[float] = None,
    resolution: Optional[int] = None,
    use_ema: Optional[bool] = None,
    early_stopping: Optional[bool] = None,
    pretrain_weights: str = "",
    overrides: Optional[dict] = None,
):
    """Resolve the run's training configuration; fails in seconds on a bad value.

    Runs on a CPU pod before any GPU is requested: an unknown option (the error names the
    closest valid one), an invalid value or a knob contradicting an override stops the run here.

    Args:
        dataset_uri: where the dataset comes from (recorded as ``data.dataset_dir``).
        model_size: preset: nano, small, medium, large, base, seg-nano ... seg-2xlarge, tiny.
        run_config: output; the resolved ``RunConfig`` as JSON (model, data, train, eval, log).
        epochs: training epochs; None: the preset's.
        batch_size: images per step and device; None: the preset's.
        grad_accum_steps: steps accumulated per optimizer update; None: the preset's.
        lr: learning rate; None: the preset's.
        resolution: input side in pixels (a multiple of patch size x windows); None: preset's.
        use_ema: keep an exponential moving average of the weights; None: the preset's.
        early_stopping: stop when validation mAP stops improving; None: the preset's.
        pretrain_weights: empty: official COCO weights (tiny: random); random; or a URI/path.
        overrides: other RunConfig options, flat ("warmup_epochs") or dotted ("train.lr").
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.config import write_run_config

    knobs = {
        "epochs": epochs,
        "batch_size": batch_size,
        "grad_accum_steps": grad_accum_steps,
        "lr": lr,
        "resolution": resolution,
        "use_ema": use_ema,
        "early_stopping": early_stopping,
        "pretrain_weights": pretrain_weights or None,
    }
    with step_errors("resolve_config"):
        config = write_run_config(run_config.path, dataset_uri, model_size, knobs, overrides)
    run_config.metadata.update(
        {
            "model_size": config.model.name,
            "epochs": config.train.epochs,
            "batch_size": config.train.batch_size,
            "grad_accum_steps": config.train.grad_accum_steps,
            "lr": config.train.lr,
            "resolution": config.model.resolution,
            "use_ema": config.train.use_ema,
        }
    )
