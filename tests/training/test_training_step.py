"""Gradient accumulation equivalence, the optimizer groups, the schedule and the sampler."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import tiny_session

from rfdetr.config import RunConfig, TrainConfig, get_preset
from rfdetr.data import build_dataset, collate_fn, normalize_images
from rfdetr.data.normalize import normalize_constants
from rfdetr.data.transforms import pick_step_size
from rfdetr.models.build import build_model
from rfdetr.models.criterion import count_boxes, reduce_num_boxes
from rfdetr.training import fit
from rfdetr.training.distributed import DistributedTrainSampler
from rfdetr.training.optim import build_optimizer, build_scheduler, param_groups
from rfdetr.training.setup import build_criterion
from rfdetr.training.step import accumulate_gradients, optimizer_step


def _gradients(micro_batch: int, shapes_coco: Path) -> dict[str, torch.Tensor]:
    config = RunConfig.from_kwargs("tiny", dataset_dir=str(shapes_coco), num_classes=3)
    dataset = build_dataset(shapes_coco, "train", 64, train=False)
    pixels, targets = collate_fn([dataset[i] for i in range(4)])
    images = normalize_images(pixels)
    torch.manual_seed(0)
    model = build_model(config.model).train()
    criterion = build_criterion(config).train()
    normaliser = reduce_num_boxes(count_boxes(targets) * config.model.group_detr, images.device)
    accumulate_gradients(
        model, criterion, images, targets, micro_batch=micro_batch, num_boxes=normaliser
    )
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_training_accumulation_matches_one_big_batch(shapes_coco: Path) -> None:
    whole = _gradients(4, shapes_coco)  # batch_size=4, grad_accum_steps=1
    split = _gradients(2, shapes_coco)  # batch_size=2, grad_accum_steps=2
    singles = _gradients(1, shapes_coco)  # batch_size=1, grad_accum_steps=4
    assert whole.keys() == split.keys() == singles.keys() and len(whole) > 50
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(singles[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
    assert max(g.abs().max() for g in whole.values()) > 1e-3  # the comparison is not vacuous


def test_training_param_groups_follow_upstream_layer_decay() -> None:
    model_config = get_preset("tiny")
    model = build_model(model_config)
    train = TrainConfig(lr=1e-3, lr_encoder=2e-3, weight_decay=0.05)
    lr_of, wd_of = {}, {}
    for group in param_groups(model, train, model_config):
        for parameter in group["params"]:
            lr_of[id(parameter)], wd_of[id(parameter)] = group["lr"], group["weight_decay"]
    params = dict(model.named_parameters())
    layers = model_config.out_feature_indexes[-1] + 1  # upstream's L
    vit = "backbone.0.encoder.encoder."

    def lr(name: str) -> float:
        return lr_of[id(params[name])]

    scale = 2e-3 * 0.7**2
    assert lr(vit + "embeddings.patch_embeddings.projection.weight") == pytest.approx(
        scale * 0.8 ** (layers + 1)
    )
    assert lr(vit + "encoder.layer.1.mlp.fc1.weight") == pytest.approx(scale * 0.8 ** (layers - 1))
    assert lr(vit + "layernorm.weight") == pytest.approx(scale)
    assert lr("transformer.decoder.layers.0.linear1.weight") == pytest.approx(1e-3 * 0.7)
    assert lr("class_embed.weight") == lr("backbone.0.projector.stages.0.0.cv1.conv.weight") == 1e-3
    assert wd_of[id(params[vit + "encoder.layer.1.norm1.weight"])] == 0.0
    assert wd_of[id(params[vit + "encoder.layer.1.attention.attention.query.bias"])] == 0.0
    assert wd_of[id(params[vit + "encoder.layer.1.mlp.fc1.weight"])] == 0.05
    assert set(lr_of) == {id(p) for p in model.parameters()}  # every parameter in one group


@pytest.mark.parametrize(
    ("kind", "warmup", "expected"),
    [
        ("step", 0.0, [1.0, 1.0, 1.0, 1.0, 0.1, 0.1]),  # lr_drop=2 epochs of 2 steps
        ("cosine", 0.0, [1.0, 0.9330, 0.75, 0.5, 0.25, 0.0670]),
        ("step", 1.0, [0.0, 0.5, 1.0, 1.0, 0.1, 0.1]),
    ],
)
def test_training_lr_schedule_per_optimizer_step(
    kind: str, warmup: float, expected: list[float]
) -> None:
    model = torch.nn.Linear(2, 2)
    train = TrainConfig(epochs=3, lr=1.0, lr_scheduler=kind, lr_drop=2, warmup_epochs=warmup)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, train, steps_per_epoch=2)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected, abs=1e-4)


def test_training_optimizer_state_round_trips_weights_only(tmp_path: Path) -> None:
    model_config = get_preset("tiny")
    model = build_model(model_config)
    optimizer = build_optimizer(model, TrainConfig(), model_config, torch.device("cpu"))
    model(torch.randn(1, 3, 64, 64))["pred_logits"].sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "opt.pth")
    state = torch.load(tmp_path / "opt.pth", weights_only=True)
    cpu = torch.device("cpu")
    other = build_optimizer(build_model(model_config), TrainConfig(), model_config, cpu)
    other.load_state_dict(state)
    assert len(other.state) == len(optimizer.state) > 0


@pytest.mark.parametrize("num_items", [7, 200])  # repeated tiny split / shuffled epoch
def test_training_distributed_sampler_splits_ranks(num_items: int) -> None:
    shares = [DistributedTrainSampler(num_items, 8, rank, 2, seed=3) for rank in range(2)]
    for sampler in shares:
        sampler.set_epoch(1)
    first, second = (list(s) for s in shares)
    assert len(first) == len(second) == len(shares[0])
    if num_items == 200:  # without replacement: disjoint and covering the split
        assert not set(first) & set(second) and len(set(first) | set(second)) == 200
    else:  # upstream's tiny rule: 5 steps of the global batch
        assert len(first) + len(second) == 8 * 5
    again = DistributedTrainSampler(num_items, 8, 0, 2, seed=3)
    again.set_epoch(1)
    assert list(again) == first
    again.set_epoch(2)
    assert list(again) != first


def test_training_gradient_checkpointing_keeps_gradients(shapes_coco: Path) -> None:
    from rfdetr.training.setup import apply_runtime_settings

    plain = _gradients(2, shapes_coco)
    config = RunConfig.from_kwargs(
        "tiny", dataset_dir=str(shapes_coco), gradient_checkpointing=True
    )
    dataset = build_dataset(shapes_coco, "train", 64, train=False)
    pixels, targets = collate_fn([dataset[i] for i in range(4)])
    images = normalize_images(pixels)
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).train()
    apply_runtime_settings(model, config.model)
    assert model.backbone[0].encoder.encoder.gradient_checkpointing
    criterion = build_criterion(config).train()
    normaliser = reduce_num_boxes(count_boxes(targets) * config.model.group_detr, images.device)
    accumulate_gradients(model, criterion, images, targets, micro_batch=2, num_boxes=normaliser)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(parameter.grad, plain[name], rtol=1e-4, atol=1e-6)


def test_training_fit_with_accumulation_equals_one_big_batch(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    """``fit`` with 2 micro-batches of 2 ends on the same weights as batches of 4.

    Both runs see the same 4-image steps (the loader batch is ``batch_size x grad_accum_steps``)
    and normalise by the whole step's box count, so only float summation order differs: the
    gradient of 2 + 2 images vs 4 in one pass, about 1e-7 relative. Tolerance 1e-5 absolute on
    every weight: a tenth of one AdamW step (lr 1e-4; Adam moves a weight by about lr per step),
    far above rounding, far below a real change: the control run, a 1.5x learning rate, moves
    weights by more than 1e-4.
    """

    def weights(name: str, **options: Any) -> dict[str, torch.Tensor]:
        config = tiny_config(shapes_coco, tmp_path / name, epochs=1, **options)
        state = torch.load(fit(config).output_dir / "checkpoint.pth", weights_only=True)
        assert state["global_step"] == 5  # 6 images repeated to 5 steps of 4
        return {**state["model"], **{f"ema.{k}": v for k, v in state["ema"]["module"].items()}}

    accumulated = weights("accumulated", batch_size=2, grad_accum_steps=2)
    whole = weights("whole", batch_size=4, grad_accum_steps=1)
    control = weights("control", batch_size=4, grad_accum_steps=1, lr=1.5e-4)
    assert accumulated.keys() == whole.keys()
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, rtol=0, atol=1e-5, msg=name)
    assert max(float((control[k] - whole[k]).abs().max()) for k in whole) > 1e-4


def test_training_step_on_uint8_batches_equals_the_old_float_batches(shapes_coco: Path) -> None:
    """Loader batches are uint8 now, normalised in the step before the multi-scale resize
    (issue 17). The reference is the old contract: float items normalised one by one
    (``x * scale - shift`` per image, as ``rfdetr.data.transforms.Normalize`` did), passed to
    the step as already-normalised floats. Two multi-scale steps must give identical losses and
    weights, bit for bit."""
    block = get_preset("tiny").block_size
    dataset = build_dataset(shapes_coco, "train", 64, train=True, scale_multiple=block, seed=1)
    scale, shift = (c[0] for c in normalize_constants())
    sessions = [tiny_session(sizes=dataset.sizes) for _ in range(2)]
    for step in range(2):
        items = [dataset[(0, i)] for i in (2 * step, 2 * step + 1)]
        pixels, targets = collate_fn(items)
        old = torch.stack([torch.empty(p.shape).copy_(p).mul_(scale).sub_(shift) for p in pixels])
        new_values = optimizer_step(sessions[0], pixels, targets, 0, step)
        old_values = optimizer_step(sessions[1], old, targets, 0, step)
        assert new_values == old_values
    sizes = {pick_step_size(dataset.sizes, s, sessions[0].config.train.seed) for s in range(2)}
    assert sizes != {max(dataset.sizes)}  # at least one step resized its batch
    new, old = (s.model.state_dict() for s in sessions)
    assert all(torch.equal(new[k], old[k]) for k in new)
