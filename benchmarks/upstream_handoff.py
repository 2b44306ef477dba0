"""Checkpoints moving both ways between this project and upstream rfdetr==1.11.2.

Ours -> upstream: our Nano (random weights, every tensor perturbed, 2 classes) is written by our
checkpoint writer at 384 px and at 192 px; in the upstream virtual environment (a subprocess, as
in ``parity_upstream.py``) ``rfdetr.from_checkpoint(file)`` and ``RFDETRNano(pretrain_weights=
file)`` predict on the same images with no other argument; the script prints how many detections
match ours (same class id and name, score within 1e-4) and the largest box deviation in pixels.

Upstream -> ours: upstream trains Nano at 192 px for 2 epochs (random init, a tiny synthetic set)
and writes its Lightning ``last.ckpt``; we read its class names and resume it for one more epoch.

Usage:
    python benchmarks/upstream_handoff.py [--upstream-venv DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from parity_upstream import ensure_upstream_venv

from rfdetr import RFDETRNano
from rfdetr.checkpoints import read_checkpoint, save_checkpoint
from rfdetr.config import ConfigError
from rfdetr.data.synthetic import make_shapes_dataset

CLASSES = ("red_box", "blue_box")
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE_PX = 1.0

UPSTREAM_PREDICT = textwrap.dedent(
    """
    import sys, torch, rfdetr
    from PIL import Image
    how, path, out, *images = sys.argv[1:]
    if how == "from_checkpoint":
        model = rfdetr.from_checkpoint(path, device="cpu")
    elif how.startswith("RFDETRNano(pretrain_weights=..., resolution="):
        resolution = int(how.split("=")[-1].rstrip(")"))
        model = rfdetr.RFDETRNano(pretrain_weights=path, device="cpu", resolution=resolution)
    else:
        model = rfdetr.RFDETRNano(pretrain_weights=path, device="cpu")
    found = []
    for image in images:
        det = model.predict(Image.open(image).convert("RGB"), threshold=0.0)
        found.append({"xyxy": torch.from_numpy(det.xyxy), "names": list(det.data["class_name"]),
                      "score": torch.from_numpy(det.confidence),
                      "class_id": torch.from_numpy(det.class_id)})
    torch.save({"detections": found, "resolution": model.model_config.resolution}, out)
    """
)

UPSTREAM_TRAIN = textwrap.dedent(
    """
    import sys, torch, rfdetr
    torch.manual_seed(0)
    model = rfdetr.RFDETRNano(pretrain_weights=None, resolution=192, device="cpu")
    model.train(dataset_dir=sys.argv[1], output_dir=sys.argv[2], epochs=2, batch_size=2,
                checkpoint_interval=5, num_workers=0, device="cpu", tensorboard=False,
                progress_bar=None, multi_scale=False)
    """
)


def run_upstream(python: Path, script: str, args: list[str], work: Path) -> None:
    path = work / "upstream_script.py"
    path.write_text(script)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    subprocess.run([str(python), str(path), *args], check=True, env=env, cwd=work)


def our_checkpoint(resolution: int, folder: Path) -> tuple[RFDETRNano, Path]:
    """Our Nano with perturbed random weights, written by our checkpoint writer."""
    torch.manual_seed(resolution)
    model = RFDETRNano(
        pretrain_weights=None, device="cpu", class_names=list(CLASSES), resolution=resolution
    )
    with torch.no_grad():
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    path = save_checkpoint(
        folder / f"ours_{resolution}" / "checkpoint_best_total.pth",
        model.model.state_dict(),
        config={"model": model.config.model_dump(mode="json")},
        class_names=list(CLASSES),
    )
    return model, path


def compare(ours: list, theirs: list[dict]) -> tuple[int, int, int, float]:
    """(matched, upstream's foreground rows, its background rows, max |box difference| px).

    Upstream's top-k runs over every logit column, the no-object column included, and returns
    those rows as ``__background__``; ours never ranks that column, so only upstream's other rows
    are compared. A row matches a row of ours with the same class id and name, a score within
    ``SCORE_TOLERANCE`` and every box side within ``BOX_TOLERANCE_PX`` (nearest such row: random
    weights give many near-equal scores, whose order float rounding may swap).
    """
    matched, foreground, background, worst = 0, 0, 0, 0.0
    for mine, other in zip(ours, theirs, strict=True):
        keep = other["class_id"].numpy() < len(CLASSES)
        foreground, background = foreground + int(keep.sum()), background + int((~keep).sum())
        names = np.array(mine.data["class_name"])
        for box, score, cid, name in zip(
            other["xyxy"].numpy()[keep], other["score"].numpy()[keep],
            other["class_id"].numpy()[keep], np.array(other["names"])[keep], strict=True,
        ):  # fmt: skip
            same = (mine.class_id == cid) & (names == name)
            same &= np.abs(mine.confidence - score) <= SCORE_TOLERANCE
            if not same.any():
                continue
            deviation = float(np.abs(mine.xyxy[same] - box).max(axis=1).min())
            if deviation <= BOX_TOLERANCE_PX:
                matched, worst = matched + 1, max(worst, deviation)
    return matched, foreground, background, worst


def ours_to_upstream(python: Path, images: list[Path], work: Path) -> None:
    for resolution in (384, 192):
        model, path = our_checkpoint(resolution, work)
        expected = model.predict([str(i) for i in images], threshold=0.0)
        hows = ["from_checkpoint", "RFDETRNano(pretrain_weights=...)"]
        if resolution != 384:  # upstream's PE grid becomes resolution // 16, resampled at load
            hows.append(f"RFDETRNano(pretrain_weights=..., resolution={resolution})")
        for number, how in enumerate(hows):
            out = work / f"up_{resolution}_{number}.pt"
            run_upstream(python, UPSTREAM_PREDICT, [how, str(path), str(out), *map(str, images)],
                         work)  # fmt: skip
            got = torch.load(out, weights_only=True)
            matched, total, background, worst = compare(expected, got["detections"])
            print(
                f"ours@{resolution} -> upstream {how}: at {got['resolution']} px, "
                f"{matched}/{total} detections match (max box deviation {worst:.1e} px; "
                f"upstream adds {background} rows of the no-object column)"
            )


def upstream_to_ours(python: Path, dataset: Path, work: Path) -> None:
    run_upstream(python, UPSTREAM_TRAIN, [str(dataset), str(work / "upstream_run")], work)
    last = work / "upstream_run" / "last.ckpt"
    print(f"upstream last.ckpt class names read here: {read_checkpoint(last).class_names}")
    options = {"dataset_dir": str(dataset), "epochs": 3, "batch_size": 2, "num_workers": 0,
               "multi_scale": False, "resume": str(last), "device": "cpu"}  # fmt: skip
    try:
        RFDETRNano(pretrain_weights=None, device="cpu", resolution=192).train(
            output_dir=str(work / "ours_pe24"), **options
        )
    except ConfigError as error:
        print(f"resume at --resolution 192 with our default PE grid: refused: {error}")
    model = RFDETRNano(pretrain_weights=None, device="cpu", resolution=192,
                       positional_encoding_size=12)  # fmt: skip
    result = model.train(output_dir=str(work / "ours_resumed"), **options)
    trained = [record["epoch"] for record in result.history]
    loss = result.history[-1]["train_loss"]
    print(
        f"resume with positional_encoding_size=12: trained epochs {trained} (upstream finished "
        f"0-1), {result.epochs_completed} completed, train loss {loss:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-venv", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the files here")
    args = parser.parse_args()
    python = ensure_upstream_venv(args.upstream_venv).absolute()  # not resolve(): the venv link
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dataset = make_shapes_dataset(work / "dataset", splits={"train": 2, "valid": 2},
                                      image_size=192, classes=CLASSES)  # fmt: skip
        images = sorted((dataset / "valid").glob("*.jpg"))
        ours_to_upstream(python, images, work)
        upstream_to_ours(python, dataset, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
