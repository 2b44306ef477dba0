"""How long `validate_dataset` takes on 10,000 images with 100,000 boxes (target: < 10 s).

Generates a COCO and a YOLO dataset of JPEGs in a temporary folder (generation is not timed),
validates each and prints the time and the image/box counts the report found. ``--deep`` also
decodes every image and builds every mask as training does (``rfdetr validate --deep``, the
pipeline's default); it has no target, its cost grows with the image size (``--size``).

    .venv/bin/python benchmarks/validate_speed.py [--images 10000] [--boxes-per-image 10]
        [--deep] [--size 640x480]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from rfdetr.data import validate_dataset

WIDTH, HEIGHT = 64, 48
TARGET_SECONDS = 10.0


def _jpeg_bytes() -> bytes:
    """A noisy JPEG (so decoding costs what a photo's does, unlike a flat colour)."""
    noise = random.Random(1).randbytes(WIDTH * HEIGHT * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (WIDTH, HEIGHT), noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _random_box(rng: random.Random) -> tuple[float, float, float, float]:
    w, h = rng.uniform(2, WIDTH / 2), rng.uniform(2, HEIGHT / 2)
    return rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), w, h


def _split_sizes(images: int) -> dict[str, int]:
    valid = max(1, images // 5)
    return {"train": images - valid, "valid": valid}


def make_coco(root: Path, images: int, boxes_per_image: int, seed: int = 0) -> None:
    """A Roboflow-style COCO export: a superclass category 0 and 3 real classes."""
    rng, jpeg, next_ann = random.Random(seed), _jpeg_bytes(), 1
    categories = [{"id": 0, "name": "things", "supercategory": "none"}] + [
        {"id": i, "name": f"class{i}", "supercategory": "things"} for i in (1, 2, 3)
    ]
    for split, count in _split_sizes(images).items():
        folder = root / split
        folder.mkdir(parents=True)
        entries, anns = [], []
        for i in range(count):
            (folder / f"img{i:06d}.jpg").write_bytes(jpeg)
            entries.append(
                {"id": i, "file_name": f"img{i:06d}.jpg", "width": WIDTH, "height": HEIGHT}
            )
            for _ in range(boxes_per_image):
                x, y, w, h = _random_box(rng)
                category = rng.randint(1, 3)
                anns.append(
                    {
                        "id": next_ann,
                        "image_id": i,
                        "category_id": category,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
                next_ann += 1
        data = {"images": entries, "annotations": anns, "categories": categories}
        (folder / "_annotations.coco.json").write_text(json.dumps(data))


def make_yolo(root: Path, images: int, boxes_per_image: int, seed: int = 0) -> None:
    """A YOLO export with 3 classes."""
    rng, jpeg = random.Random(seed), _jpeg_bytes()
    root.mkdir(parents=True)
    (root / "data.yaml").write_text("nc: 3\nnames: [a, b, c]\n")
    for split, count in _split_sizes(images).items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(count):
            (root / split / "images" / f"img{i:06d}.jpg").write_bytes(jpeg)
            lines = []
            for _ in range(boxes_per_image):
                x, y, w, h = _random_box(rng)
                cx, cy = (x + w / 2) / WIDTH, (y + h / 2) / HEIGHT
                lines.append(
                    f"{rng.randint(0, 2)} {cx:.6f} {cy:.6f} {w / WIDTH:.6f} {h / HEIGHT:.6f}"
                )
            (root / split / "labels" / f"img{i:06d}.txt").write_text("\n".join(lines) + "\n")


def main() -> int:
    global WIDTH, HEIGHT  # the generators read the image size from these
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--boxes-per-image", type=int, default=10)
    parser.add_argument("--deep", action="store_true", help="decode images and masks too")
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="image WxH (default 64x48)")
    args = parser.parse_args()
    WIDTH, HEIGHT = (int(v) for v in args.size.lower().split("x"))
    slow = False
    for name, make in (("coco", make_coco), ("yolo", make_yolo)):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / name
            make(root, args.images, args.boxes_per_image)
            start = time.perf_counter()
            report = validate_dataset(root, deep=args.deep)
            seconds = time.perf_counter() - start
        images = sum(s.images for s in report.splits.values())
        boxes = sum(s.annotations for s in report.splits.values())
        mode = f"deep, {WIDTH}x{HEIGHT}" if args.deep else "headers"
        target = "no target" if args.deep else f"target < {TARGET_SECONDS:.0f} s"
        print(
            f"{name} ({mode}): validated {images} images / {boxes} boxes in {seconds:.2f} s, "
            f"{1000 * seconds / max(images, 1):.2f} ms per image "
            f"({len(report.errors)} errors, {len(report.warnings)} warnings; {target})"
        )
        slow |= (seconds >= TARGET_SECONDS and not args.deep) or not report.usable
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
