"""The pipeline's KFP components: one lightweight Python component per step.

Each runs on :data:`RFDETR_IMAGE` (nothing installed at run time) and only calls one function of
:mod:`pipelines.steps`; importing this package imports kfp, never torch.
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
