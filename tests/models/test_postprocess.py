"""Top-k post-processing: scores, labels, pixel boxes and masks on hand-made outputs."""

from __future__ import annotations

import torch

from rfdetr.models.postprocess import PostProcess


def logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p)))


def make_outputs() -> dict[str, torch.Tensor]:
    # 1 image, 3 queries, 2 classes + the unused last column.
    logits = torch.full((1, 3, 3), -10.0)
    logits[0, 0, 1] = logit(0.9)  # query 0 -> class 1
    logits[0, 2, 0] = logit(0.7)  # query 2 -> class 0
    logits[0, 1, 2] = logit(0.99)  # unused column: must never be returned
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_top_k_scores_labels_and_pixel_boxes() -> None:
    result = PostProcess(num_select=2)(make_outputs(), torch.tensor([[100, 200]]))[0]
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.7]))
    assert result["labels"].tolist() == [1, 0]
    # cxcywh (0.5, 0.5, 0.5, 0.5) on a 200 x 100 (w x h) image.
    torch.testing.assert_close(result["boxes"][0], torch.tensor([50.0, 25.0, 150.0, 75.0]))
    # (0.25, 0.75, 0.5, 0.5) -> x from 0 to 100, y from 50 to 100.
    torch.testing.assert_close(result["boxes"][1], torch.tensor([0.0, 50.0, 100.0, 100.0]))


def test_threshold_and_explicit_class_columns() -> None:
    outputs = make_outputs()
    kept = PostProcess(num_select=3)(outputs, torch.tensor([[10, 10]]), threshold=0.8)[0]
    assert kept["labels"].tolist() == [1]
    # Columns given explicitly (as for COCO weights): class id = position in the list.
    remapped = PostProcess(num_select=1, class_columns=[2, 0])(outputs, torch.tensor([[10, 10]]))
    assert remapped[0]["labels"].tolist() == [0]
    torch.testing.assert_close(remapped[0]["scores"], torch.tensor([0.99]))


def test_boxes_are_clamped_to_the_image() -> None:
    outputs = make_outputs()
    outputs["pred_boxes"][0, 0] = torch.tensor([0.95, 0.05, 0.3, 0.3])
    box = PostProcess(num_select=1)(outputs, torch.tensor([[100, 100]]))[0]["boxes"][0]
    torch.testing.assert_close(box, torch.tensor([80.0, 0.0, 100.0, 20.0]))


def test_masks_follow_their_queries_and_take_the_image_size() -> None:
    outputs = make_outputs()
    masks = torch.full((1, 3, 4, 4), -5.0)
    masks[0, 0, :2, :2] = 5.0  # query 0: top-left quarter
    masks[0, 2, 2:, 2:] = 5.0  # query 2: bottom-right quarter
    outputs["pred_masks"] = masks
    result = PostProcess(num_select=2)(outputs, torch.tensor([[8, 12]]))[0]
    assert result["masks"].shape == (2, 8, 12) and result["masks"].dtype == torch.bool
    assert result["masks"][0, 0, 0] and not result["masks"][0, 7, 11]
    assert result["masks"][1, 7, 11] and not result["masks"][1, 0, 0]
