"""One optimizer step with gradient accumulation, one training epoch, and the state carried
through them (:class:`TrainSession`, with the best-so-far scores and early stopping).

A step's ``batch_size * grad_accum_steps`` images run as ``grad_accum_steps`` micro-batches, each
loss normalised by the box count of the **whole step** and summed without a ``1 / grad_accum_steps``
factor, so the gradient equals that of one batch of all the step's images.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils._pytree import tree_map_only

from rfdetr.config import RunConfig
from rfdetr.data.dataset import DetectionDataset
from rfdetr.data.normalize import model_input
from rfdetr.data.transforms import Target, pick_step_size, resize_batch
from rfdetr.errors import EXIT_FAILED, UserError
from rfdetr.models.criterion import SetCriterion, count_boxes, reduce_num_boxes
from rfdetr.models.detector import RFDETR
from rfdetr.training.distributed import DistInfo
from rfdetr.training.ema import ModelEMA
from rfdetr.training.loggers import RunLogger, progress_bar
from rfdetr.training.runtime import Precision

logger = logging.getLogger(__name__)

# Logged every step: the weighted total and the final-layer terms (aux copies stay internal).
_LOGGED_LOSSES = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask_ce", "loss_mask_dice")


# A few fp16 steps skipped while the loss scale settles are routine; this many in a row diverged.
MAX_SKIPPED_STEPS = 25


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; training stopped before applying that step."""

    exit_code = EXIT_FAILED


@dataclass
class EarlyStopping:
    """Stops after ``patience`` epochs in which ``max(regular, EMA)`` (the EMA alone with
    ``use_ema``) did not exceed ``best`` by more than ``min_delta``."""

    patience: int
    min_delta: float
    use_ema: bool = False
    best: float | None = None
    bad_epochs: int = 0

    def update(self, regular: float | None, ema: float | None) -> bool:
        """Record one epoch's mAPs; True when training should stop."""
        candidates = [ema] if self.use_ema and ema is not None else [regular, ema]
        values = [v for v in candidates if v is not None]
        if not values:
            return False
        current = max(values)
        if self.best is None or current > self.best + self.min_delta:
            self.best, self.bad_epochs = current, 0
            return False
        self.bad_epochs += 1
        logger.info(
            "early stopping: no improvement over %.4f for %d of %d epochs",
            self.best,
            self.bad_epochs,
            self.patience,
        )
        return self.bad_epochs >= self.patience

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters; patience and margin stay the configured ones."""
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))


@dataclass
class BestTracker:
    """Best scores so far of the ``regular`` and EMA models; ``total``: the source of
    ``checkpoint_best_total.pth``."""

    regular: float | None = None
    regular_epoch: int | None = None
    ema: float | None = None
    ema_epoch: int | None = None
    total: str | None = None

    def improve(self, source: str, score: float, epoch: int) -> bool:
        """Record ``score``; True when it beats the best of ``source`` (or is the first)."""
        best = getattr(self, source)
        if best is not None and not score > best:
            return False
        setattr(self, source, score)
        setattr(self, f"{source}_epoch", epoch)
        return True

    def winner(self) -> str:
        """``ema`` when its best is strictly higher than the regular best, else ``regular``."""
        if self.ema is not None and (self.regular is None or self.ema > self.regular):
            return "ema"
        return "regular"


@dataclass
class TrainSession:
    """The state of a training run, carried through every epoch and step.

    ``model`` is unwrapped (its state dict is saved); ``forward_model`` is it or its DDP /
    compiled wrapper. ``sizes``: multi-scale sizes (empty: one size). ``skipped_in_a_row``:
    consecutive steps the fp16 scaler skipped. ``run_logger`` exists on the main process only.
    """

    config: RunConfig
    model: RFDETR
    forward_model: nn.Module
    criterion: SetCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    precision: Precision
    device: torch.device
    dist: DistInfo
    sizes: list[int] = field(default_factory=list)
    global_step: int = 0
    skipped_in_a_row: int = 0
    tracker: BestTracker = field(default_factory=BestTracker)
    stopper: EarlyStopping | None = None
    run_logger: RunLogger | None = None
    valid: DetectionDataset | None = None
    test: DetectionDataset | None = None
    class_names: list[str] = field(default_factory=list)


def accumulate_gradients(
    model: nn.Module,
    criterion: SetCriterion,
    images: Tensor,
    targets: list[Target],
    *,
    micro_batch: int,
    num_boxes: Tensor,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Tensor]:
    """Forward and backward one optimizer step's images in micro-batches of ``micro_batch``.

    Args:
        model: the module to run (a DDP wrapper all-reduces in the last micro-batch only).
        criterion: computes the loss dict; its ``total_loss`` is back-propagated.
        images: ``[N, 3, S, S]`` normalised images of the whole step.
        targets: ``N`` target dicts (``labels`` ``[T]``, ``boxes`` ``[T, 4]`` normalised cxcywh).
        micro_batch: images per forward pass (``N / micro_batch`` is ``grad_accum_steps``).
        num_boxes: the whole step's normaliser (:func:`reduce_num_boxes` of its box count x
            ``group_detr``), shared by all micro-batches.
        precision: autocast settings (default fp32).
        scaler: scales the loss for fp16 (default none).

    Returns:
        Detached sums over micro-batches: ``loss`` (weighted total) and every loss term;
        ``class_error`` is averaged instead.
    """
    precision = precision or Precision(images.device.type)
    starts = range(0, images.shape[0], micro_batch)
    step_batches = [(images[i : i + micro_batch], targets[i : i + micro_batch]) for i in starts]
    sums: dict[str, Tensor] = {}
    for index, (micro_images, micro_targets) in enumerate(step_batches):
        no_sync = hasattr(model, "no_sync") and index < len(step_batches) - 1  # DDP: reduce last
        with model.no_sync() if no_sync else contextlib.nullcontext():
            with precision.autocast():
                outputs = model(micro_images)
            if precision.dtype is not None:  # losses and matching in fp32, as the weights are
                outputs = tree_map_only(Tensor, _to_float32, outputs)
            loss_dict = criterion(outputs, micro_targets, num_boxes=num_boxes)
            loss = criterion.total_loss(loss_dict)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        for key, value in {"loss": loss, **loss_dict}.items():
            weight = 1.0 / len(step_batches) if key == "class_error" else 1.0
            sums[key] = sums.get(key, 0) + value.detach() * weight
    return sums


def _to_float32(tensor: Tensor) -> Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def optimizer_step(
    session: TrainSession, images: Tensor, targets: list[Target], epoch: int, step: int
) -> dict[str, float]:
    """One optimizer step on a step's batch; returns the logged values.

    ``images`` are the loader's uint8 pixels, normalised on the training device before the
    multi-scale resize (:func:`rfdetr.data.normalize.model_input`).

    Raises:
        NonFiniteLossError: the step's loss is NaN/inf (the weights are left untouched).
    """
    train, device = session.config.train, session.device
    images = model_input(images, device)
    targets = [tree_map_only(Tensor, lambda v: v.to(device, non_blocking=True), t) for t in targets]
    if session.sizes:
        size = pick_step_size(session.sizes, session.global_step, train.seed)
        images, targets = resize_batch(images, targets, size)
    num_boxes = reduce_num_boxes(count_boxes(targets) * session.criterion.group_detr, device)
    sums = accumulate_gradients(
        session.forward_model, session.criterion, images, targets, micro_batch=train.batch_size,
        num_boxes=num_boxes, precision=session.precision, scaler=session.scaler,
    )  # fmt: skip
    if _apply_gradients(session, _check_finite(session, sums, epoch, step)):
        session.skipped_in_a_row = 0
    else:
        _note_skipped(session, sums, epoch, step)
    values = {k: float(v) for k, v in sums.items() if k == "loss" or k in _LOGGED_LOSSES}
    if "class_error" in sums:  # last, as log.txt has always had it
        values["class_error"] = float(sums["class_error"])
    values["lr"] = max(group["lr"] for group in session.optimizer.param_groups)
    return values


def _check_finite(session: TrainSession, sums: dict[str, Tensor], epoch: int, step: int) -> bool:
    """Whether the loss is finite on every process; raises when no fp16 scaler can skip it."""
    finite = torch.isfinite(sums["loss"]).to(torch.float32)
    if session.dist.enabled:  # every rank must decide together, or the others would hang
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if bool(finite):
        return True
    if session.scaler.is_enabled():
        return False
    raise NonFiniteLossError(_non_finite_message(session, sums, epoch, step))


def _non_finite_message(
    session: TrainSession, sums: dict[str, Tensor], epoch: int, step: int, streak: str = ""
) -> str:
    bad = [k for k, v in sums.items() if k != "class_error" and not bool(torch.isfinite(v))]
    output = session.config.train.output_dir
    return (
        f"non-finite loss at epoch {epoch}, step {step} (optimizer step {session.global_step})"
        f"{streak}: {', '.join(bad) or 'on another process'}; training stopped before applying "
        f"it; the last good state is {output}/checkpoint.pth (try a lower lr, or amp=False)"
    )


def _note_skipped(session: TrainSession, sums: dict[str, Tensor], epoch: int, step: int) -> None:
    session.skipped_in_a_row += 1
    if session.skipped_in_a_row >= MAX_SKIPPED_STEPS:
        streak = f", {session.skipped_in_a_row} skipped fp16 steps in a row"
        raise NonFiniteLossError(_non_finite_message(session, sums, epoch, step, streak))
    logger.info(
        "fp16: step %d of epoch %d skipped (inf/NaN gradients), loss scale now %g",
        step,
        epoch,
        session.scaler.get_scale(),
    )


def _apply_gradients(session: TrainSession, finite: bool = True) -> bool:
    """Unscale, clip, step the optimizer, the schedule and the EMA; whether it was applied (a
    step the fp16 scaler skips or whose loss is not ``finite`` changes only the scale)."""
    optimizer, scaler = session.optimizer, session.scaler
    if not finite:  # only reached with a scaler: skip the step and back off as it would
        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        optimizer.zero_grad(set_to_none=True)
        return False
    scale = scaler.get_scale() if scaler.is_enabled() else None
    max_norm = session.config.train.clip_max_norm
    if max_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(session.model.parameters(), max_norm, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if scale is not None and scaler.get_scale() < scale:  # the scaler skipped this step
        return False
    session.scheduler.step()
    if session.ema is not None:
        session.ema.update(session.model)
    session.global_step += 1
    return True


def train_one_epoch(session: TrainSession, loader: Any, epoch: int) -> dict[str, float]:
    """Run every step of one epoch; returns the epoch means (``loss``, terms, ``lr``, speed)."""
    session.forward_model.train()
    session.criterion.train()
    bar = progress_bar(len(loader), f"epoch {epoch}", session.config.log.progress_bar)
    totals: dict[str, float] = {}
    started, images_seen = time.perf_counter(), 0
    try:
        for step, (images, targets) in enumerate(loader):
            values = optimizer_step(session, images, targets, epoch, step)
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value
            images_seen += images.shape[0] * session.dist.world_size
            speed = images_seen / max(time.perf_counter() - started, 1e-9)
            if session.run_logger is not None:
                session.run_logger.step(session.global_step, values)
            bar.set_postfix(
                loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.1e}", img_s=f"{speed:.1f}"
            )
            bar.update()
    finally:
        bar.close()
    steps = max(len(loader), 1)
    means = {key: value / steps for key, value in totals.items()}
    means["lr"] = max(group["lr"] for group in session.optimizer.param_groups)
    means["images_per_s"] = images_seen / max(time.perf_counter() - started, 1e-9)
    return means
