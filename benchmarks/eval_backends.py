"""Time COCO scoring (``score_predictions``) with pycocotools and with faster-coco-eval.

Synthetic but realistic load: IMAGES images of 640 x 480 with 1-15 objects each over CLASSES
classes, and 300 detections per image (RF-DETR's ``num_select``): jittered true positives plus
low-scoring clutter. Prints seconds per backend and checks the summaries agree.

    python benchmarks/eval_backends.py [--images 500] [--classes 10] [--segm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rfdetr.evaluation.coco import score_predictions
from rfdetr.evaluation.cocoeval import faster_available
from rfdetr.evaluation.predictions import ImagePredictions, encode_masks

WIDTH, HEIGHT, DETECTIONS = 640, 480, 300


def _boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    wh = rng.uniform(8, 200, size=(count, 2))
    xy = rng.uniform(0, 1, size=(count, 2)) * (np.array([WIDTH, HEIGHT]) - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def _box_masks(boxes: np.ndarray) -> np.ndarray:
    masks = np.zeros((len(boxes), HEIGHT, WIDTH), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = True
    return masks


def make_case(images: int, classes: int, segm: bool) -> tuple[dict, list[ImagePredictions]]:
    """(ground truth, predictions) with a fixed seed."""
    rng = np.random.default_rng(0)
    gt_images, annotations, predictions = [], [], []
    for i in range(images):
        gt_images.append({"id": i, "file_name": f"{i}.jpg", "width": WIDTH, "height": HEIGHT})
        truth = _boxes(rng, int(rng.integers(1, 16)))
        labels = rng.integers(0, classes, len(truth))
        for box, label in zip(truth, labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {
                "id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            }  # fmt: skip
            if segm:
                ann["segmentation"] = [[x1, y1, x2, y1, x2, y2, x1, y2]]
            annotations.append(ann)
        jitter = truth + rng.normal(0, 4, truth.shape)
        clutter = _boxes(rng, DETECTIONS - len(truth))
        boxes = np.clip(np.concatenate([jitter, clutter]), 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        scores = np.concatenate(
            [rng.uniform(0.4, 1, len(truth)), rng.uniform(0, 0.5, len(clutter))]
        )
        pred_labels = np.concatenate([labels, rng.integers(0, classes, len(clutter))])
        order = np.argsort(-scores)
        predictions.append(
            ImagePredictions(
                index=i, image_id=i, height=HEIGHT, width=WIDTH,
                scores=scores[order].astype(np.float32), labels=pred_labels[order],
                boxes=boxes[order].astype(np.float32),
                masks=encode_masks(_box_masks(boxes[order])) if segm else None,
            )
        )  # fmt: skip
    categories = [{"id": k, "name": f"class_{k}", "source_id": k + 1} for k in range(classes)]
    return {"images": gt_images, "annotations": annotations, "categories": categories}, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--segm", action="store_true", help="also score masks")
    args = parser.parse_args()
    ground_truth, predictions = make_case(args.images, args.classes, args.segm)
    print(
        f"{args.images} images, {len(ground_truth['annotations'])} objects, "
        f"{DETECTIONS} detections/image, {args.classes} classes, segm={args.segm}"
    )
    backends = ["pycocotools"] + (["faster-coco-eval"] if faster_available() else [])
    results = {}
    for backend in backends:
        started = time.perf_counter()
        results[backend] = score_predictions(
            ground_truth, predictions, segmentation=args.segm, backend=backend
        )
        seconds = time.perf_counter() - started
        primary = results[backend].primary
        print(f"{backend:>17}: {seconds:7.2f} s   mAP50:95 {primary.map_50_95:.6f}")
    if len(results) == 2:
        a, b = (r.primary.as_stats() for r in results.values())
        print(
            f"largest summary difference: {max(abs(x - y) for x, y in zip(a, b, strict=True)):.2e}"
        )
    else:
        print("faster-coco-eval is not installed: pip install faster-coco-eval")


if __name__ == "__main__":
    main()
