"""The ONNX metadata's ``outputs`` description names only keys the metadata holds."""

from __future__ import annotations

import json
from dataclasses import replace

from rfdetr.export.metadata import ExportMetadata

BASE = ExportMetadata(
    model_name="tiny",
    task="detection",
    class_names=["a", "b"],
    input_shape=(64, 64),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    num_queries=10,
    num_select=10,
    patch_size=16,
    dynamic_batch=True,
    with_postprocess=False,
    rfdetr_version="0",
)


def test_export_metadata_mentions_logit_columns_only_when_written() -> None:
    plain = BASE.to_props()
    assert "logit_columns" not in plain
    assert "logit_columns" not in plain["outputs"]
    assert "column i is class id i" in json.loads(plain["outputs"])["labels"]
    sparse = replace(BASE, logit_columns=[1, 3]).to_props()
    assert json.loads(sparse["logit_columns"]) == [1, 3]
    assert "logit_columns" in json.loads(sparse["outputs"])["labels"]
    assert ExportMetadata.from_props(sparse).logit_columns == [1, 3]
