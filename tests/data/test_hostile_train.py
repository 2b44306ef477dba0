"""Acceptance of issue 13: `rfdetr train` on every hostile-dataset reproduction, with
``--num-workers`` 0 and 2, ends with exit 2 and one error line naming the file, no traceback,
within a minute per run and 2 GB resident.

The runs share one child process (``tests/fuzz/driver.py``: torch is imported once) under
``RLIMIT_AS``; every train image is broken, so whichever the sampler draws first fails.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

DRIVER = Path(__file__).resolve().parents[1] / "fuzz" / "driver.py"
Case = Callable[[Path, SimpleNamespace], tuple[Path, str, str]]  # -> root, model, file named


def _train_json(root: Path) -> Path:
    return root / "train" / "_annotations.coco.json"


def _coco_seg_annotation(value: object) -> Case:
    def case(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
        root = b.make_coco(tmp, segmentation=True)
        b.edit_json(_train_json(root), lambda d: d["annotations"][0].update(segmentation=value))
        return root, "tiny-seg", "_annotations.coco.json"

    return case


def _coco_json(edit: Callable[[dict], None]) -> Case:
    def case(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
        root = b.make_coco(tmp)
        b.edit_json(_train_json(root), edit)
        return root, "tiny", "_annotations.coco.json"

    return case


def _yaml(text: str) -> Case:
    def case(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
        root = b.make_yolo(tmp)
        (root / "data.yaml").write_text(text)
        return root, "tiny", "data.yaml"

    return case


def _every_coco_image(replace: Callable[[Path, SimpleNamespace], None]) -> Case:
    def case(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
        root = b.make_coco(tmp)
        for index in range(3):
            image = root / "train" / f"train_{index}.jpg"
            image.unlink()
            replace(image, b)
        return root, "tiny", "train_"

    return case


def _every_yolo_label(text: str) -> Case:
    def case(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
        root = b.make_yolo(tmp)
        for index in range(3):
            (root / "train" / "labels" / f"train_{index}.txt").write_text(text)
        return root, "tiny", ".txt:1"

    return case


def _symlink_out(image: Path, b: SimpleNamespace) -> None:
    outside = image.parents[2] / f"outside_{image.name}"
    b.write_image(outside)
    image.symlink_to(outside)


def _say_12000(data: dict) -> None:
    for image in data["images"]:
        image.update(width=12_000, height=12_000)
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]  # its RLE is 64x48


def _big_pngs(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
    """12000x12000 images (below PIL's bomb limit), which the annotation file agrees with."""
    root = b.make_coco(tmp)
    shared = tmp / "big.png"
    Image.new("1", (12_000, 12_000)).save(shared, format="PNG")
    for index in range(3):
        (root / "train" / f"train_{index}.jpg").unlink()
        os.link(shared, root / "train" / f"train_{index}.jpg")
    b.edit_json(_train_json(root), _say_12000)
    return root, "tiny", "_annotations.coco.json"


def _float_tiff(image: Path, b: SimpleNamespace) -> None:
    Image.fromarray(np.full((b.height, b.width), 0.5, np.float32)).save(image, format="TIFF")


def _truncated(image: Path, b: SimpleNamespace) -> None:
    b.write_image(image)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 4 // 5])


def _split_symlink_out(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
    root = b.make_coco(tmp)
    (root / "train").rename(tmp.parent / f"{tmp.name}_elsewhere")
    (root / "train").symlink_to(tmp.parent / f"{tmp.name}_elsewhere")
    return root, "tiny", "train"


def _yolo_labels_symlink_out(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
    root = b.make_yolo(tmp)
    secret = tmp.parent / f"{tmp.name}_secret.txt"
    secret.write_text("hunter2 0.5 0.5 0.1 0.1\n")
    for index in range(3):
        label = root / "train" / "labels" / f"train_{index}.txt"
        label.unlink(missing_ok=True)
        label.symlink_to(secret)
    return root, "tiny", "train_"


def _alias_bomb() -> str:
    lines = ["a0: &a0 [x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join([*lines, "names: *a8"]) + "\n"


CASES: dict[str, Case] = {
    "polygon_1e9": _coco_seg_annotation([[1, 1, 1e9, 2, 3, 9]]),
    "polygon_1e300": _coco_seg_annotation([[1, 1, 1e300, 2, 3, 9]]),
    "rle_garbage": _coco_seg_annotation({"size": [48, 64], "counts": "\x7f~~garbage"}),
    "rle_1e12": _coco_seg_annotation({"size": [48, 64], "counts": [0, 10**12]}),
    "alias_bomb": _yaml(_alias_bomb()),
    "names_not_strings": _yaml("names: [[a, b], {x: 1}, null]\n"),
    "image_id_2_64": _coco_json(lambda d: d["images"][0].update(id=2**64)),
    "width_2_64": _coco_json(lambda d: d["images"][0].update(width=2**64)),
    "json_100000_deep": lambda tmp, b: _deep_json(tmp, b),
    "nul_in_file_name": _coco_json(lambda d: d["images"][0].update(file_name="a\x00.jpg")),
    "yolo_class_1e20": _every_yolo_label("1e20 0.5 0.5 0.2 0.2\n"),
    "fifo_images": _every_coco_image(lambda image, b: os.mkfifo(image)),
    "classes_200000": _yaml(f"names: [{', '.join(['c'] * 200_000)}]\n"),
    "truncated_jpeg": _every_coco_image(_truncated),
    "float_tiff": _every_coco_image(_float_tiff),
    "png_12000": _big_pngs,
    "missing_images": _every_coco_image(lambda image, b: None),
    "images_symlinked_out": _every_coco_image(_symlink_out),
    "split_symlinked_out": _split_symlink_out,
    "labels_symlinked_out": _yolo_labels_symlink_out,
    "label_not_a_number": _every_yolo_label("0 0.5 0.5 0.2 x\n"),
}


def _deep_json(tmp: Path, b: SimpleNamespace) -> tuple[Path, str, str]:
    root = b.make_coco(tmp)
    _train_json(root).write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return root, "tiny", "_annotations.coco.json"


@pytest.mark.slow
def test_rfdetr_train_on_every_reproduction(tmp_path: Path, build: SimpleNamespace) -> None:
    argvs, named = [], []
    for name, case in CASES.items():
        root, model, file_named = case(tmp_path / name, build)
        for workers in ("0", "2"):
            argv = ["train", str(root), "--model", model, "--epochs", "1", "--batch-size", "2"]
            argv += ["--num-workers", workers, "--device", "cpu", "--no-tensorboard"]
            argv += ["--no-run-test", "--no-multi-scale", "--output-dir", str(tmp_path / "o")]
            argvs.append(argv)
            named.append((name, workers, file_named))
    (tmp_path / "cases.json").write_text(json.dumps(argvs))
    results_file, progress = tmp_path / "results.json", tmp_path / "at"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    limit_mb = 8000  # address space (set by the driver itself): torch maps ~4 GB for ~1 GB resident

    child = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            str(tmp_path / "cases.json"),
            str(results_file),
            str(progress),
            str(limit_mb),
            "0",  # the first case to run (the driver appends one JSON line per case)
        ],
        capture_output=True,
        text=True,
        timeout=60 * len(argvs),
        env={**os.environ, "PYTHONPATH": str(DRIVER.parents[2])},
        check=False,
    )
    assert child.returncode == 0, f"driver died at {progress.read_text()}: {child.stderr[-3000:]}"
    failures = []
    results = [json.loads(line) for line in results_file.read_text().splitlines()]
    for (name, workers, file_named), result in zip(named, results, strict=True):
        errors = [line for line in result["err"].splitlines() if line.startswith("rfdetr train:")]
        output = result["out"] + result["err"] + result["traceback"]
        ok = result["code"] == 2 and len(errors) == 1 and file_named in errors[0]
        ok = ok and "Traceback" not in output and "hunter2" not in output
        if not ok or result["seconds"] > 60:
            failures.append(f"{name} workers={workers}: exit {result['code']}, {output[-800:]!r}")
    assert not failures, "\n".join(failures)
    print(f"slowest run: {max(r['seconds'] for r in results):.1f} s of {len(results)}")
    peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    assert peak_mb < 2048, f"peak resident {peak_mb:.0f} MB"
