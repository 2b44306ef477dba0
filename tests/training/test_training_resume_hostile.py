"""Resume from a damaged ``checkpoint.pth``: a one-line CheckpointError naming the file.

Each case is a finding of the checkpoint fuzz (tests/fuzz/test_fuzz_checkpoints.py): before
the fix it ended in a pydantic ``ValidationError``, a ``TypeError`` or torch's own exception,
with a traceback and exit 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import tiny_options

from rfdetr.checkpoints import CheckpointError
from rfdetr.config import RunConfig
from rfdetr.training import fit


def _damaged(last: Path, change: Callable[[dict[str, Any]], None], dest: Path) -> str:
    state = torch.load(last, map_location="cpu", weights_only=True)
    change(state)
    dest.mkdir()
    torch.save(state, dest / "checkpoint.pth")
    return str(dest / "checkpoint.pth")


def _no_num_classes(state: dict[str, Any]) -> None:
    state["config"]["model"]["num_classes"] = None


def _no_format_and_a_bad_config(state: dict[str, Any]) -> None:
    del state["format"]
    state["config"]["data"] = {"size": [8, 8]}


def _forged_upstream_format(state: dict[str, Any]) -> None:
    state["format"] = "upstream-lightning"


def _rng_float(state: dict[str, Any]) -> None:
    state["rng"] = 1.5


def _rng_of_another_generator(state: dict[str, Any]) -> None:
    state["rng"][0]["torch"] = torch.zeros(3, dtype=torch.uint8)


def _optimizer_without_groups(state: dict[str, Any]) -> None:
    state["optimizer"]["param_groups"] = []


def _epoch_text(state: dict[str, Any]) -> None:
    state["epoch"] = "1"


def _ema_of_sparse_weights(state: dict[str, Any]) -> None:
    key = next(iter(state["ema"]["module"]))
    state["ema"]["module"][key] = state["ema"]["module"][key].reshape(-1).to_sparse()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (_no_num_classes, "the run config it records is not valid"),
        (_no_format_and_a_bad_config, "the run config it records is not valid"),
        (_forged_upstream_format, "claims to be a converted upstream state"),
        (_rng_float, "its 'rng' is a float"),
        (_epoch_text, "its 'epoch' is a str"),
        (_ema_of_sparse_weights, "not dense"),
        (_rng_of_another_generator, "its random state does not fit this run"),
        (_optimizer_without_groups, "its optimizer state does not fit this run"),
    ],
)
def test_training_resume_of_a_damaged_checkpoint_is_one_line(
    change: Callable[[dict[str, Any]], None],
    needle: str,
    shapes_coco: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config: Callable[..., RunConfig],
    trained_once: Path,
) -> None:
    resume = _damaged(trained_once, change, tmp_path_factory.mktemp("damaged") / "run")
    with pytest.raises(CheckpointError) as err:
        fit(tiny_config(shapes_coco, Path(resume).parent, epochs=2, resume=resume))
    message = str(err.value)
    assert "\n" not in message and resume in message and needle in message, message


@pytest.fixture(scope="module")
def trained_once(shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``checkpoint.pth`` of a real 1-epoch run, shared by the cases."""
    out = tmp_path_factory.mktemp("run")
    fit(RunConfig.from_kwargs("tiny", **tiny_options(shapes_coco, out, epochs=1)))
    return out / "checkpoint.pth"
