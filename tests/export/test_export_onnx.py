"""The exported graph: ONNX contract, opset, metadata, parity with PyTorch at batch 1 and 2."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch

from rfdetr.api import RFDETRModel
from rfdetr.config import get_preset, toy_version
from rfdetr.export import (
    ExportError,
    ExportVerificationError,
    ONNXRuntimeModel,
    read_metadata,
    verify_onnx,
)
from rfdetr.export.graph import ExportModule
from rfdetr.export.selection import forced_selection
from rfdetr.inference import IMAGENET_MEAN, IMAGENET_STD


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_detection_graph_contract_and_parity(detector: RFDETRModel, detector_onnx: Path) -> None:
    proto = onnx.load(str(detector_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert {n.op_type for n in proto.graph.node}.isdisjoint({"GatherElements", "Resize"})
    graph = proto.graph
    assert [(i.name, _dims(i)) for i in graph.input] == [("input", ["batch", 3, 64, 64])]
    assert [(o.name, _dims(o)) for o in graph.output] == [
        ("dets", ["batch", 10, 4]),
        ("labels", ["batch", 10, 4]),
    ]
    report = verify_onnx(detector_onnx, detector.model)
    assert report.batch_sizes == (1, 2)
    assert set(report.max_abs_diff) == {"dets", "labels"}
    assert max(report.max_abs_diff.values()) <= 1e-4 and report.passed
    assert report.selection_forced and report.mismatched["selection"] == 0


def test_segmentation_graph_contract_and_parity(
    segmenter: RFDETRModel, segmenter_onnx: Path
) -> None:
    graph = onnx.load(str(segmenter_onnx)).graph
    assert [(o.name, _dims(o)) for o in graph.output][-1] == ("masks", ["batch", 10, 16, 16])
    report = verify_onnx(segmenter_onnx, segmenter.model)
    assert report.passed and report.batch_sizes == (1, 2)
    assert report.max_abs_diff["masks"] <= 1e-4


def test_metadata_parses_back(
    detector_onnx: Path, segmenter_onnx: Path, tiny: SimpleNamespace
) -> None:
    meta = read_metadata(detector_onnx)
    assert meta.class_names == tiny.class_names
    assert meta.model_name == "tiny" and meta.task == "detection" and not meta.segmentation
    assert meta.input_shape == (64, 64) and meta.resolution == 64
    assert meta.mean == IMAGENET_MEAN and meta.std == IMAGENET_STD
    assert (meta.num_queries, meta.num_select, meta.patch_size) == (10, 10, 8)
    assert meta.dynamic_batch and not meta.with_postprocess
    assert meta.dataset_ids is None and meta.logit_columns is None
    assert meta.rfdetr_version
    props = {p.key: p.value for p in onnx.load(str(detector_onnx)).metadata_props}
    assert props["class_names"] == '["cat", "dog", "cow"]'
    assert read_metadata(segmenter_onnx).task == "segmentation"


def test_fixed_batch_and_a_non_square_shape(detector: RFDETRModel, tmp_path: Path) -> None:
    path = detector.export(tmp_path, dynamic_batch=False, batch_size=2, shape=(48, 80))
    graph = onnx.load(str(path)).graph
    assert _dims(graph.input[0]) == [2, 3, 48, 80]
    assert read_metadata(path).input_shape == (48, 80)
    images = torch.randn(3, 3, 48, 80)  # 3 images through a batch-2 file: split and padded
    got = ONNXRuntimeModel(path)(images)
    with torch.inference_mode():
        expected = detector.model(images)
    for key in ("pred_boxes", "pred_logits"):
        assert (got[key] - expected[key]).abs().max() <= 1e-4


def test_newer_opset(detector: RFDETRModel, tmp_path: Path) -> None:
    path = detector.export(tmp_path, opset_version=18)
    assert onnx.load(str(path)).opset_import[0].version == 18


def test_verification_catches_a_different_model(detector_onnx: Path, tiny: SimpleNamespace) -> None:
    other = tiny.perturbed(tiny.detector_class, seed=7)
    with pytest.raises(ExportVerificationError, match=r"rfdetr-tiny\.onnx: .*FAILED") as info:
        verify_onnx(detector_onnx, other.model)
    assert "\n" not in str(info.value)
    report = verify_onnx(detector_onnx, other.model, raise_on_failure=False)
    assert not report.passed and report.max_abs_diff["labels"] > 1e-2


def test_the_model_and_its_forward_are_untouched(detector: RFDETRModel) -> None:
    forward = detector.model.forward
    before = {k: v.clone() for k, v in detector.model.state_dict().items()}
    ExportModule(detector.model, (64, 64))
    assert detector.model.forward == forward and "forward" not in vars(detector.model)
    after = detector.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (60, 64)}, "shape 60x64 must be positive and divisible by patch_size \\* "),
        ({"shape": (64,)}, "shape must be two integers"),
        ({"opset_version": 12}, "opset_version 12 is not supported; use 17..20"),
        ({"dynamic_batch": False, "batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    detector: RFDETRModel, tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ExportError, match=message) as info:
        detector.export(tmp_path, **kwargs)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_forced_selection_reproduces_the_model_and_flags_contradictions(
    detector: RFDETRModel,
) -> None:
    model = detector.model
    images = torch.randn(2, 3, 64, 64)
    captured = []
    head = model.transformer.enc_out_class_embed[0]
    handle = head.register_forward_hook(lambda m, a, out: captured.append(out.amax(-1)))
    with torch.inference_mode():
        plain = model(images)
    handle.remove()
    own = torch.topk(captured[0], model.num_queries, dim=1).indices
    with forced_selection(model, own, 1e-3) as check, torch.inference_mode():
        same = model(images)
    assert check.forced and check.violations == 0 and check.reordered == 0
    assert torch.equal(same["pred_logits"], plain["pred_logits"])
    swapped = own.clone()
    swapped[:, [0, -1]] = own[:, [-1, 0]]  # the best token ranked last: contradicts the scores
    with forced_selection(model, swapped, 1e-3) as check, torch.inference_mode():
        other = model(images)
    assert check.violations >= 2 and check.reordered == 4 and check.worst_gap > 1e-3
    assert not torch.allclose(other["pred_boxes"], plain["pred_boxes"])


@pytest.mark.parametrize(
    ("size", "extra"),
    [
        ("base", {}),  # patch 14, 4 windows, taps [2, 5, 8, 11]
        ("seg-nano", {}),  # one window: every block attends globally
        ("tiny", {"projector_scale": ["P3", "P5"]}),  # two projector levels
    ],
)
def test_other_architectures_export_and_match(size: str, extra: dict, tmp_path: Path) -> None:
    toy = toy_version(get_preset(size)) if size != "tiny" else get_preset(size)

    class Toy(RFDETRModel):
        pass

    Toy.size = size
    torch.manual_seed(0)
    config = {**toy.model_dump(exclude={"name"}), **extra}
    model = Toy(pretrain_weights=None, device="cpu", **config)
    with torch.no_grad():
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    path = model.export(tmp_path, verify=False)
    report = verify_onnx(path, model.model)
    assert report.passed and report.batch_sizes == (1, 2), report.summary()
