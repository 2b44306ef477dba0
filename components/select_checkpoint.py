"""The ``select_checkpoint`` component: the model to ship, stripped to its weights."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def select_checkpoint(checkpoints: Input[Model], model: Output[Model]) -> float:
    """Pick the better of the best regular and best EMA models (EMA only when strictly better)
    and strip it to weights, config, class names and metrics.

    Args:
        checkpoints: the training run folder.
        model: output; a folder with ``checkpoint_best_total.pth``; metadata: source (regular
            or ema), epoch, validation mAP50:95 and mAP50, model size, class names.

    Returns:
        The selected model's validation mAP50:95 (-1 when unknown).
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.model import select_checkpoint as select

    with step_errors("select_checkpoint"):
        selected = select(checkpoints.path, model.path)
    model.metadata.update(selected.metadata())
    return -1.0 if selected.map_50_95 is None else selected.map_50_95
