"""Invariants of the Hungarian matcher."""

from __future__ import annotations

import logging

import pytest
import torch

from rfdetr.models.matcher import HungarianMatcher

NUM_CLASSES = 4


def _boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.cat(
        [0.2 + 0.6 * torch.rand(n, 2, generator=gen), 0.05 + 0.3 * torch.rand(n, 2, generator=gen)],
        1,
    )


def _outputs(batch: int, queries: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=gen),
        "pred_boxes": _boxes(batch * queries, gen).view(batch, queries, 4),
    }


def _targets(counts: list[int], seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {"labels": torch.randint(0, NUM_CLASSES, (n,), generator=gen), "boxes": _boxes(n, gen)}
        for n in counts
    ]


def _check_groups(
    query_idx: torch.Tensor, target_idx: torch.Tensor, per_group: int, groups: int, num_targets: int
) -> None:
    assert query_idx.dtype == target_idx.dtype == torch.int64
    assert len(query_idx) == len(target_idx) == groups * min(per_group, num_targets)
    assert len(set(query_idx.tolist())) == len(query_idx)  # a query is used at most once
    for g in range(groups):
        in_group = (query_idx >= g * per_group) & (query_idx < (g + 1) * per_group)
        assert int(in_group.sum()) == min(per_group, num_targets)
        matched_targets = target_idx[in_group].tolist()
        assert len(set(matched_targets)) == len(matched_targets)  # one match per target per group
        if num_targets <= per_group:
            assert sorted(matched_targets) == list(range(num_targets))


@pytest.mark.parametrize(("groups", "per_group"), [(1, 10), (3, 6), (4, 2)])
def test_one_match_per_target_per_group(groups: int, per_group: int) -> None:
    counts = [3, 0, 5, 1]
    matches = HungarianMatcher()(
        _outputs(4, groups * per_group), _targets(counts), group_detr=groups
    )
    assert len(matches) == 4
    for (query_idx, target_idx), n in zip(matches, counts, strict=True):
        _check_groups(query_idx, target_idx, per_group, groups, n)


def test_batched_equals_single_image() -> None:
    outputs, targets = _outputs(3, 12, seed=5), _targets([4, 2, 6], seed=6)
    batched = HungarianMatcher()(outputs, targets, group_detr=2)
    for b in range(3):
        single_out = {k: v[b : b + 1] for k, v in outputs.items()}
        ((query_idx, target_idx),) = HungarianMatcher()(single_out, [targets[b]], group_detr=2)
        assert torch.equal(query_idx, batched[b][0])
        assert torch.equal(target_idx, batched[b][1])


def test_all_targets_empty() -> None:
    matches = HungarianMatcher()(_outputs(2, 6), _targets([0, 0]), group_detr=3)
    for query_idx, target_idx in matches:
        assert query_idx.numel() == target_idx.numel() == 0
        assert query_idx.dtype == torch.int64


def test_recovers_perfect_predictions() -> None:
    targets = _targets([5], seed=3)
    permutation = torch.tensor([4, 0, 3, 1, 2])  # query q predicts target permutation[q]
    logits = torch.full((1, 5, NUM_CLASSES + 1), -6.0)
    logits[0, torch.arange(5), targets[0]["labels"][permutation]] = 6.0
    outputs = {"pred_logits": logits, "pred_boxes": targets[0]["boxes"][permutation][None]}
    ((query_idx, target_idx),) = HungarianMatcher()(outputs, targets)
    assert torch.equal(target_idx[query_idx.argsort()], permutation)


def test_degenerate_and_non_finite_inputs_give_full_matching(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outputs, targets = _outputs(2, 8, seed=7), _targets([3, 2], seed=8)
    outputs["pred_boxes"][:, ::2, 2:] = 0.0  # zero-size predictions
    targets[0]["boxes"][0, 2:] = 0.0  # zero-size target
    matcher = HungarianMatcher()
    for query_idx, target_idx in matcher(outputs, targets, group_detr=2):
        assert len(query_idx) == len(target_idx) > 0
    outputs["pred_logits"][0, 1, :] = float("nan")
    outputs["pred_logits"][1, 2, :] = float("inf")
    with caplog.at_level(logging.WARNING, logger="rfdetr.models.matcher"):
        matches = matcher(outputs, targets, group_detr=2)
    assert "non-finite" in caplog.text
    for (query_idx, target_idx), n, bad_query in zip(matches, [3, 2], [1, 2], strict=True):
        _check_groups(query_idx, target_idx, 4, 2, n)
        assert bad_query not in query_idx.tolist()  # a non-finite cost loses every contest


def test_more_targets_than_queries_per_group() -> None:
    matches = HungarianMatcher()(_outputs(1, 6), _targets([5]), group_detr=3)
    _check_groups(*matches[0], per_group=2, groups=3, num_targets=5)


def test_group_count_must_divide_queries() -> None:
    with pytest.raises(ValueError, match="divisible"):
        HungarianMatcher()(_outputs(1, 10), _targets([2]), group_detr=3)


def test_dense_and_factored_masks_match_alike() -> None:
    gen = torch.Generator().manual_seed(11)
    outputs, targets = _outputs(2, 6, seed=12), _targets([2, 3], seed=13)
    spatial, queries = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 6, 4, generator=gen)
    bias = torch.tensor(0.3)
    for target in targets:
        target["masks"] = torch.rand(len(target["labels"]), 32, 32, generator=gen) > 0.5
    dense = dict(outputs, pred_masks=torch.einsum("bchw,bqc->bqhw", spatial, queries) + bias)
    factored = dict(
        outputs, pred_masks={"spatial_features": spatial, "query_features": queries, "bias": bias}
    )
    torch.manual_seed(0)
    from_dense = HungarianMatcher()(dense, targets, group_detr=2)
    torch.manual_seed(0)
    from_factored = HungarianMatcher()(factored, targets, group_detr=2)
    for (qa, ta), (qb, tb) in zip(from_dense, from_factored, strict=True):
        assert torch.equal(qa, qb) and torch.equal(ta, tb)


def test_mask_cost_prefers_the_matching_mask() -> None:
    # Two queries with identical boxes and scores; only their masks tell them apart.
    target_mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    target_mask[0, :, :16] = True
    box = torch.tensor([[0.25, 0.5, 0.5, 1.0]])
    pred_masks = torch.full((1, 2, 8, 8), -8.0)
    pred_masks[0, 1, :, :4] = 8.0  # query 1 draws the target's mask
    outputs = {
        "pred_logits": torch.zeros(1, 2, NUM_CLASSES + 1),
        "pred_boxes": box.expand(1, 2, 4).clone(),
        "pred_masks": pred_masks,
    }
    targets = [{"labels": torch.tensor([0]), "boxes": box, "masks": target_mask}]
    ((query_idx, _),) = HungarianMatcher()(outputs, targets)
    assert query_idx.tolist() == [1]
