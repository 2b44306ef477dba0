"""Format detection, class maps, and loading COCO/YOLO splits into tensors."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from rfdetr.data import (
    ClassMap,
    DatasetError,
    DatasetFormat,
    DatasetFormatError,
    build_dataloader,
    build_dataset,
    coco_ground_truth,
    collate_fn,
    dataset_class_map,
    detect_format,
    make_train_sampler,
)
from rfdetr.data.loader import EpochLoader
from rfdetr.utils.box_ops import box_cxcywh_to_xyxy

# The two objects of every image (pixel xyxy in the 64x48 originals).
CAT_BOX = [4.0, 6.0, 24.0, 22.0]
DOG_BOX = [30.0, 20.0, 54.0, 40.0]


def pixel_boxes(target: dict) -> torch.Tensor:
    """Normalised cxcywh boxes back to pixel xyxy in the original image."""
    height, width = target["orig_size"].tolist()
    return box_cxcywh_to_xyxy(target["boxes"]) * torch.tensor([width, height, width, height])


def test_detect_formats(coco_dir: Path, yolo_dir: Path, tmp_path: Path, build) -> None:
    coco = detect_format(coco_dir)
    assert coco.format is DatasetFormat.COCO
    assert set(coco.splits) == {"train", "valid"}
    yolo = detect_format(yolo_dir)
    assert yolo.format is DatasetFormat.YOLO and yolo.yaml_path == yolo_dir / "data.yaml"

    alt = build.make_yolo(tmp_path / "alt", yaml_name="data.yml")
    (alt / "valid").rename(alt / "val")
    layout = detect_format(alt)
    assert layout.yaml_path == alt / "data.yml"
    assert layout.split_dir("val") == layout.split_dir("valid") == alt / "val"
    with pytest.raises(DatasetError, match="no test split"):
        layout.split_dir("test")
    with pytest.raises(ValueError, match="unknown split"):
        layout.split_dir("holdout")


def test_detection_failure_says_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.jpg").write_bytes(b"")
    with pytest.raises(DatasetFormatError) as info:
        detect_format(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "data.yaml or data.yml" in message and "found: train/ (a.jpg)" in message


def test_class_map_rules() -> None:
    categories = [
        {"id": 0, "name": "animals", "supercategory": "none"},
        {"id": 3, "name": "dog", "supercategory": "animals"},
        {"id": 1, "name": "cat", "supercategory": "animals"},
    ]
    cm = ClassMap.from_coco_categories(categories, annotated_ids={1, 3})
    assert cm.names == ("cat", "dog") and cm.source_ids == (1, 3)
    assert cm.index_of(3) == 1 and cm.source_ids[0] == 1
    assert cm.skipped == ((0, "animals"),)
    assert ClassMap.from_dict(cm.to_dict()) == cm
    # A "none" category that has annotations is a real class.
    assert ClassMap.from_coco_categories(categories, {0, 1}).source_ids == (0, 1, 3)
    # Plain COCO ids starting at 1, no superclass: nothing is skipped.
    plain = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert ClassMap.from_coco_categories(plain, {1}).names == ("a", "b")
    gaps = ClassMap.from_yolo_names({0: "a", 5: "b"})
    assert gaps.names == ("a", "b") and gaps.index_of(5) == 1
    assert ClassMap.from_yolo_names(["x", "y"]).source_ids == (0, 1)


def test_coco_detection_items(coco_dir: Path) -> None:
    dataset = build_dataset(coco_dir, "train", 32, train=False)
    assert len(dataset) == 3 and dataset.format is DatasetFormat.COCO
    assert dataset.class_map.names == ("cat", "dog") and dataset.num_classes == 2
    image, target = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8  # normalised per batch
    # The crowd annotation of image 0 is not a training target.
    assert target["labels"].tolist() == [0, 1]
    assert target["boxes"].dtype == torch.float32
    assert bool(((target["boxes"] >= 0) & (target["boxes"] <= 1)).all())
    assert torch.allclose(pixel_boxes(target), torch.tensor([CAT_BOX, DOG_BOX]), atol=1e-4)
    assert target["image_id"] == 0
    assert target["orig_size"].tolist() == [48, 64] and target["size"].tolist() == [32, 32]
    assert "masks" not in target


def test_valid_split_uses_train_class_ids(coco_dir: Path) -> None:
    dataset = build_dataset(coco_dir, "val", 32, train=False)
    assert dataset.split == "valid"
    assert dataset.class_map == dataset_class_map(coco_dir)
    assert dataset[1][1]["labels"].tolist() == [0, 1]


def test_coco_segmentation_masks(coco_seg_dir: Path) -> None:
    dataset = build_dataset(coco_seg_dir, "train", 64, train=False, segmentation=True)
    raw_image, raw = dataset.load_raw(0)
    assert raw_image.shape == (3, 48, 64) and raw_image.dtype == torch.uint8
    masks = raw["masks"]
    assert masks.shape == (2, 48, 64) and masks.dtype == torch.bool
    # The polygon is a right triangle filling half of its 20x16 box.
    assert abs(int(masks[0].sum()) - 20 * 16 / 2) < 20
    assert not masks[0, 20, 22]  # the far corner of the box lies outside the triangle
    _, target = dataset[0]
    assert target["masks"].shape == (2, 64, 64)


def test_coco_size_mismatch_raises_one_line(coco_dir: Path, build: SimpleNamespace) -> None:
    build.write_image(coco_dir / "train" / "train_1.jpg", width=50)
    dataset = build_dataset(coco_dir, "train", 32, train=False)
    with pytest.raises(DatasetError, match=r"train_1\.jpg: image is 50x48 but"):
        dataset[1]


def test_invalid_annotation_file_raises_naming_it(coco_dir: Path) -> None:
    (coco_dir / "train" / "_annotations.coco.json").write_text("{")
    with pytest.raises(DatasetError) as info:
        build_dataset(coco_dir, "train", 32, train=False)
    assert str(info.value).startswith(str(coco_dir / "train" / "_annotations.coco.json"))
    assert "rfdetr validate" in str(info.value) and "\n" not in str(info.value)


def test_yolo_detection_items(yolo_dir: Path) -> None:
    dataset = build_dataset(yolo_dir, "train", 32, train=False)
    assert len(dataset) == 3 and dataset.class_map.names == ("cat", "dog")
    _, target = dataset[0]
    assert target["labels"].tolist() == [0, 1]
    assert torch.allclose(pixel_boxes(target), torch.tensor([CAT_BOX, DOG_BOX]), atol=1e-3)
    assert dataset[1][1]["boxes"].shape == (0, 4)  # empty label file
    assert dataset[2][1]["labels"].shape == (0,)  # no label file


def test_yolo_segmentation_masks(yolo_seg_dir: Path) -> None:
    dataset = build_dataset(yolo_seg_dir, "train", 64, train=False, segmentation=True)
    _, raw = dataset.load_raw(0)
    assert raw["masks"].shape == (2, 48, 64)
    assert torch.allclose(raw["boxes"][1], torch.tensor(DOG_BOX), atol=1e-3)
    # Box line: the mask is the box; polygon line: a triangle, half the box.
    assert int(raw["masks"][0].sum()) == 20 * 16
    assert abs(int(raw["masks"][1].sum()) - 24 * 20 / 2) < 25
    _, empty = dataset.load_raw(2)
    assert empty["masks"].shape == (0, 48, 64)


def test_yolo_bad_label_raises_on_load(yolo_dir: Path) -> None:
    dataset = build_dataset(yolo_dir, "train", 32, train=False)
    (yolo_dir / "train" / "labels" / "train_1.txt").write_text("0 0.5 0.5 2 0.1\n")
    dataset[0]  # other items are unaffected: labels are read per item
    with pytest.raises(DatasetError, match=r"train_1\.txt:1: value 2 is outside \[0, 1\]"):
        dataset[1]


def test_partly_outside_box_is_clipped(coco_dir: Path, build: SimpleNamespace) -> None:
    def edit(data: dict) -> None:
        data["annotations"][0]["bbox"] = [50.0, 6.0, 30.0, 16.0]

    build.edit_json(coco_dir / "train" / "_annotations.coco.json", edit)
    _, raw = build_dataset(coco_dir, "train", 32, train=False).load_raw(0)
    assert raw["boxes"][0].tolist() == [50.0, 6.0, 64.0, 22.0]


def test_training_items_are_seeded_and_multi_scale(coco_seg_dir: Path) -> None:
    dataset = build_dataset(
        coco_seg_dir, "train", 64, train=True, segmentation=True, scale_multiple=32, seed=3
    )
    assert dataset.sizes == [64, 96, 128, 160, 192]
    image, target = dataset[0]
    assert image.shape == (3, 192, 192) and target["masks"].shape[1:] == (192, 192)
    assert len(target["masks"]) == len(target["boxes"]) == len(target["labels"])
    again = dataset[0]
    assert torch.equal(image, again[0]) and torch.equal(target["boxes"], again[1]["boxes"])
    draws = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        draws.add(tuple(dataset[0][1]["boxes"].flatten().tolist()))
    assert len(draws) > 1


def test_datasets_pickle_for_worker_processes(coco_seg_dir: Path, yolo_dir: Path) -> None:
    for dataset in (
        build_dataset(coco_seg_dir, "train", 32, train=True, segmentation=True),
        build_dataset(yolo_dir, "train", 32, train=False),
    ):
        copy = pickle.loads(pickle.dumps(dataset))
        assert copy.class_map == dataset.class_map
        assert torch.equal(copy[0][0], dataset[0][0])


def test_collate_stacks_images() -> None:
    items = [(torch.zeros(3, 8, 8), {"labels": torch.tensor([i])}) for i in range(3)]
    images, targets = collate_fn(items)
    assert images.shape == (3, 3, 8, 8) and [t["labels"].item() for t in targets] == [0, 1, 2]
    with pytest.raises(ValueError, match="different shapes"):
        collate_fn([(torch.zeros(3, 8, 8), {}), (torch.zeros(3, 8, 9), {})])


def test_tiny_dataset_is_repeated(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rfdetr.data.loader"):
        sampler = make_train_sampler(8, 4, generator=torch.Generator().manual_seed(0))
    assert len(sampler) == 20 and set(sampler) <= set(range(8))
    assert "repeating it: 20 images drawn with replacement per epoch" in caplog.text
    big = make_train_sampler(100, 4)
    assert sorted(big) == list(range(100))


def test_dataloader_batches(coco_dir: Path) -> None:
    dataset = build_dataset(coco_dir, "train", 32, train=True, scale_multiple=32)
    sampler = make_train_sampler(len(dataset), 2, generator=torch.Generator().manual_seed(1))
    batches = list(EpochLoader(dataset, sampler, 2, seed=1).epoch(0))
    assert len(batches) == 5  # 3 images, repeated to 5 steps x 2
    images, targets = batches[0]
    assert images.shape == (2, 3, max(dataset.sizes), max(dataset.sizes))
    assert len(targets) == 2
    eval_loader = build_dataloader(build_dataset(coco_dir, "valid", 32, train=False), 2)
    assert [len(t) for _, t in eval_loader] == [2]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
def test_coco_ground_truth_keeps_crowd_and_uses_zero_based_ids(coco_seg_dir: Path) -> None:
    dataset = build_dataset(coco_seg_dir, "train", 32, train=False, segmentation=True)
    gt = coco_ground_truth(dataset)
    assert [c["source_id"] for c in gt["categories"]] == [1, 2]
    assert {a["category_id"] for a in gt["annotations"]} == {0, 1}
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 1
    api = COCO()
    api.dataset = gt
    api.createIndex()
    assert api.annToMask(api.loadAnns(api.getAnnIds(imgIds=[0]))[0]).sum() > 0


def test_yolo_ground_truth(yolo_seg_dir: Path) -> None:
    dataset = build_dataset(yolo_seg_dir, "valid", 32, train=False, segmentation=True)
    gt = coco_ground_truth(dataset)
    assert [i["width"] for i in gt["images"]] == [64, 64]
    boxes = np.array([a["bbox"] for a in gt["annotations"]])
    assert np.allclose(boxes[0], [4, 6, 20, 16], atol=1e-3)
    assert all(len(a["segmentation"][0]) >= 6 for a in gt["annotations"])
