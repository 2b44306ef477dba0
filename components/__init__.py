"""The pipeline's KFP components: one lightweight Python component per step.

Each runs on :data:`~components._image.RFDETR_IMAGE` (the image that has this package
installed; ``install_kfp_package=False``, nothing installed at run time), and is a thin shell:
read the input artifacts, call one function of :mod:`pipelines.steps`, write outputs and
metadata. Importing this package imports kfp but never torch. Each one's plain function is
``<component>.python_func``; the order of the steps is :mod:`pipelines.training_pipeline`'s.
"""

from components._image import RFDETR_IMAGE
from components.deploy import deploy
from components.evaluate import evaluate
from components.export_onnx import export_onnx
from components.fetch_dataset import fetch_dataset
from components.publish import publish
from components.resolve_config import resolve_config
from components.select_checkpoint import select_checkpoint
from components.train import train
from components.validate_dataset import validate_dataset

__all__ = [
    "RFDETR_IMAGE",
    "deploy",
    "evaluate",
    "export_onnx",
    "fetch_dataset",
    "publish",
    "resolve_config",
    "select_checkpoint",
    "train",
    "validate_dataset",
]
