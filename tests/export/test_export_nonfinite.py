"""Non-finite weights never pass as a model (issue 13): ``rfdetr export`` of an all-NaN checkpoint
used to verify "OK" (Python's ``max(prev, nan)`` keeps ``prev``) and write a NaN model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from rfdetr.api import RFDETRModel
from rfdetr.checkpoints import save_checkpoint
from rfdetr.cli import main
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.export import verify_onnx
from rfdetr.export.onnx import ExportError


def _poisoned(model: RFDETRModel, value: float) -> dict[str, torch.Tensor]:
    state = copy.deepcopy(model.model.state_dict())
    for tensor in state.values():
        if tensor.is_floating_point():
            tensor.fill_(value)
    return state


@pytest.fixture(scope="module", params=[float("nan"), float("inf")], ids=["nan", "inf"])
def bad_checkpoint(
    request: pytest.FixtureRequest, detector: RFDETRModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    config = {"model": detector.config.model_dump(mode="json")}
    path = tmp_path_factory.mktemp("bad") / "checkpoint_best_total.pth"
    state = _poisoned(detector, request.param)
    return save_checkpoint(path, state, config=config, class_names=["cat", "dog", "cow"])


def test_export_of_a_non_finite_checkpoint_exits_2_naming_the_file(
    bad_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["export", "--weights", str(bad_checkpoint), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and str(bad_checkpoint) in err
    assert "not finite" in err
    assert not list(tmp_path.glob("*.onnx"))


def test_eval_of_a_non_finite_checkpoint_names_the_file(
    bad_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = make_shapes_dataset(
        tmp_path / "shapes", splits={"train": 2, "valid": 2}, classes=["cat", "dog", "cow"]
    )
    code = main(["eval", "--weights", str(bad_checkpoint), "--dataset-dir", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad_checkpoint) in err and "not finite" in err, err


def test_verify_fails_when_the_reference_outputs_are_nan(
    detector: RFDETRModel, detector_onnx: Path
) -> None:
    """A good ONNX file against a NaN model: the comparison must not drop the NaN."""
    model = copy.deepcopy(detector.model).eval()
    model.load_state_dict(_poisoned(detector, float("nan")))
    with pytest.raises(ExportError, match="not finite"):
        verify_onnx(detector_onnx, model)


def test_verify_report_counts_non_finite_onnx_outputs(
    detector: RFDETRModel, detector_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime returning NaN where PyTorch is finite is a failed comparison, not 'OK'."""
    import onnxruntime

    real_run = onnxruntime.InferenceSession.run

    def nan_run(self, names, feed, *args, **kwargs):
        outputs = real_run(self, names, feed, *args, **kwargs)
        return [o * float("nan") if o.dtype.kind == "f" else o for o in outputs]

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", nan_run)
    report = verify_onnx(detector_onnx, detector.model, raise_on_failure=False)
    assert not report.passed and "FAILED" in report.summary()
