"""What an exported ONNX file says about itself (``metadata_props``): consumers need nothing else.

Every value is a string; lists and numbers are JSON. Keys:

``rfdetr_version``, ``model_name`` (preset, e.g. ``nano``), ``task`` (``detection`` or
``segmentation``), ``class_names`` (name of each 0-based class id), ``dataset_ids`` (the dataset's
own id of each class id, e.g. COCO category ids; absent when unknown), ``logit_columns`` (column of
``labels`` that scores each class id; absent when class id ``i`` is column ``i``), ``input_shape``
(``[H, W]``), ``resolution``, ``mean`` / ``std`` (ImageNet normalisation of RGB in [0, 1]),
``num_queries``, ``num_select``, ``patch_size``, ``dynamic_batch``, ``with_postprocess``,
``box_format`` and ``outputs`` (a human-readable description of each output).

This module needs neither ``onnx`` nor ``onnxruntime`` at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rfdetr.errors import UserError

OUTPUTS = {  # output names in graph order, and their description
    False: {
        "dets": "[B, Q, 4] boxes, normalised cxcywh",
        "labels": "[B, Q, C+1] class logits (sigmoid per class; column i is class id i, "
        "the last column is no class)",
        "masks": "[B, Q, H/4, W/4] mask logits (segmentation)",
    },
    True: {
        "boxes": "[B, K, 4] pixel xyxy in the original image (input orig_size = [B, 2] h, w)",
        "scores": "[B, K] confidence, sorted descending (no threshold applied)",
        "class_ids": "[B, K] int64, 0-based class id (index into class_names)",
        "masks": "[B, K, H/4, W/4] mask logits of the kept detections (segmentation)",
    },
}


class MetadataError(UserError, ValueError):
    """An ONNX file lacks the metadata this package writes (not an rfdetr export)."""


@dataclass(frozen=True)
class ExportMetadata:
    """The self-description of an exported model (see the module docstring for the keys)."""

    model_name: str
    task: str
    class_names: list[str]
    input_shape: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_queries: int
    num_select: int
    patch_size: int
    dynamic_batch: bool
    with_postprocess: bool
    rfdetr_version: str
    dataset_ids: list[int] | None = None
    logit_columns: list[int] | None = None

    @property
    def resolution(self) -> int:
        """Input height (the side of a standard square export)."""
        return self.input_shape[0]

    @property
    def segmentation(self) -> bool:
        """True for instance-segmentation models (a ``masks`` output)."""
        return self.task == "segmentation"

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries: the text fields as they are, the others as JSON."""
        values = asdict(self) | {"resolution": self.resolution}
        props = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()
            if value is not None  # dataset_ids, logit_columns: absent when unknown
        }
        props["box_format"] = "pixel xyxy" if self.with_postprocess else "normalised cxcywh"
        outputs = dict(OUTPUTS[self.with_postprocess])
        if not self.segmentation:
            outputs.pop("masks")
        if self.logit_columns is not None and "labels" in outputs:
            outputs["labels"] = (
                "[B, Q, K] class logits (sigmoid; class id i is column logit_columns[i])"
            )
        props["outputs"] = json.dumps(outputs)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> ExportMetadata:
        """Parse ``metadata_props`` written by :meth:`to_props`.

        Raises:
            MetadataError: a key is missing or malformed (one line naming ``source``).
        """
        try:
            return cls(
                model_name=props["model_name"],
                task=props["task"],
                class_names=[str(n) for n in json.loads(props["class_names"])],
                input_shape=_pair(json.loads(props["input_shape"])),
                mean=_triple(json.loads(props["mean"])),
                std=_triple(json.loads(props["std"])),
                num_queries=int(props["num_queries"]),
                num_select=int(props["num_select"]),
                patch_size=int(props["patch_size"]),
                dynamic_batch=bool(json.loads(props["dynamic_batch"])),
                with_postprocess=bool(json.loads(props["with_postprocess"])),
                rfdetr_version=props["rfdetr_version"],
                dataset_ids=_optional_ints(props.get("dataset_ids")),
                logit_columns=_optional_ints(props.get("logit_columns")),
            )
        except KeyError as missing:
            raise MetadataError(
                f"{source}: no {missing} in the ONNX metadata; not a file exported by rfdetr"
            ) from None
        except (TypeError, ValueError) as error:
            raise MetadataError(f"{source}: malformed rfdetr ONNX metadata ({error})") from None


def _pair(value: Any) -> tuple[int, int]:
    height, width = (int(v) for v in value)
    return height, width


def _triple(value: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return a, b, c


def _optional_ints(text: str | None) -> list[int] | None:
    return None if text is None else [int(v) for v in json.loads(text)]


def read_metadata(path: str | os.PathLike[str]) -> ExportMetadata:
    """The metadata of an exported ``.onnx`` file (weights are not loaded).

    Raises:
        FileNotFoundError: no such file. MetadataError: not an rfdetr export.
    """
    import onnx

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such ONNX file")
    model = onnx.load(str(file), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ExportMetadata.from_props(props, source=str(file))
