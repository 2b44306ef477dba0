"""The ``export_onnx`` component: a verified ONNX file."""

# kfp 2.17 reads an optional input from typing.Optional, not from `X | None`.
# ruff: noqa: UP045
from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import RFDETR_IMAGE


@dsl.component(base_image=RFDETR_IMAGE, install_kfp_package=False)
def export_onnx(
    model: Input[Model],
    onnx_model: Output[Model],
    opset: int = 17,
    quantize: str = "",
    dataset: Optional[Input[Dataset]] = None,
):
    """Export the selected checkpoint to ONNX and verify it against PyTorch with ONNX Runtime.

    The graph takes ``input`` ``[B, 3, H, W]`` (RGB, ImageNet-normalised) and returns ``dets``
    ``[B, Q, 4]`` (normalised cxcywh) and ``labels`` ``[B, Q, C+1]`` logits (plus ``masks`` for
    Seg models); class names and preprocessing are in the file's metadata.

    Args:
        model: the selected checkpoint folder.
        onnx_model: output; a folder with ``rfdetr-<size>.onnx``; metadata: opset, input shape,
            class names, largest ONNX Runtime vs PyTorch difference per output.
        opset: ONNX opset version (17 to 20).
        quantize: int8: also an int8 file calibrated on the dataset (mAP delta in metadata).
        dataset: the dataset folder (needed for ``quantize``).
    """
    from pipelines.steps.common import step_errors
    from pipelines.steps.model import export_checkpoint

    with step_errors("export_onnx"):
        exported = export_checkpoint(
            model.path,
            onnx_model.path,
            opset=opset,
            quantize=quantize or None,
            dataset_dir=dataset.path if dataset is not None else None,
        )
    onnx_model.metadata.update(exported.metadata())
