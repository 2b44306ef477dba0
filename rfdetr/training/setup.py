"""Builders of a training run's pieces from a `RunConfig`: datasets, model, loss, loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from rfdetr.checkpoints import load_weights
from rfdetr.config import RUNTIME_MODEL_FIELDS, ConfigError, ModelConfig, RunConfig
from rfdetr.data.classes import ClassMap
from rfdetr.data.dataset import DetectionDataset, build_dataset, dataset_class_map
from rfdetr.data.formats import DatasetFormat, detect_format
from rfdetr.data.loader import EpochLoader, make_train_sampler
from rfdetr.models.backbone import WindowedViT
from rfdetr.models.build import build_model
from rfdetr.models.criterion import SetCriterion, build_weight_dict
from rfdetr.models.detector import RFDETR
from rfdetr.models.matcher import HungarianMatcher
from rfdetr.models.vit import ViTBlock
from rfdetr.training.distributed import DistInfo, DistributedTrainSampler
from rfdetr.weights import load_state_dict_strict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Datasets:
    """The splits of a run and their classes (``test`` is None when absent or not wanted)."""

    train: DetectionDataset
    valid: DetectionDataset
    test: DetectionDataset | None
    class_map: ClassMap


def build_datasets(config: RunConfig) -> Datasets:
    """Train (augmented, multi-scale), valid and optional test splits with one class map.

    Raises:
        DatasetError: the folder or a split cannot be used.
        ConfigError: ``dataset_file`` or ``class_names`` contradict the dataset.
    """
    data, model = config.data, config.model
    layout = detect_format(data.dataset_dir)
    expected = "coco" if data.dataset_file == "roboflow" else data.dataset_file  # or "auto"
    if expected != "auto" and DatasetFormat(expected) is not layout.format:
        raise ConfigError(
            f"{data.dataset_dir}: dataset_file='{data.dataset_file}' but the folder is a "
            f"{layout.format.value.upper()} dataset; pass dataset_file='auto'"
        )
    if data.class_map is not None:
        class_map = ClassMap.from_dict(data.class_map)
    else:
        class_map = dataset_class_map(data.dataset_dir)
    if data.class_names is not None and list(data.class_names) != list(class_map.names):
        raise ConfigError(
            f"class_names {data.class_names} differ from the dataset's classes "
            f"{list(class_map.names)}; leave class_names unset to use the dataset's"
        )
    common = {"segmentation": model.segmentation_head, "class_map": class_map}
    train = build_dataset(
        data.dataset_dir,
        "train",
        model.resolution,
        train=True,
        scale_multiple=model.block_size if data.multi_scale else None,
        expanded_scales=data.expanded_scales,
        seed=config.train.seed,
        **common,
    )
    valid = build_dataset(data.dataset_dir, "valid", model.resolution, train=False, **common)
    test = None
    if config.eval.run_test and "test" in layout.splits:
        test = build_dataset(data.dataset_dir, "test", model.resolution, train=False, **common)
    return Datasets(train, valid, test, class_map)


def prepare_model(config: RunConfig, model: RFDETR | None, num_classes: int) -> RFDETR:
    """The model to train, with a head of ``num_classes`` and the run's runtime settings.

    ``model`` is one to fine-tune, or None to build one from ``config.model`` and load
    ``train.pretrain_weights``; a head of another class count is re-initialised (logged).
    """
    model_config = config.model.with_overrides(num_classes=num_classes)
    if model is None:
        model = build_model(model_config)
        weights = config.train.pretrain_weights
        if weights is not None:
            from rfdetr.hub import resolve_pretrained

            load_weights(
                model,
                resolve_pretrained(weights),
                num_classes=num_classes,
                num_queries=model_config.num_queries,
                group_detr=model_config.group_detr,
            )
    elif model.num_classes != num_classes:
        logger.info(
            "re-initialising the class head: the model has %d classes, the dataset %d",
            model.num_classes,
            num_classes,
        )
        resized = build_model(model_config)
        load_state_dict_strict(
            resized, model.state_dict(), source="the model's weights", reinit_head_for=num_classes
        )
        model = resized
    apply_runtime_settings(model, model_config)
    return model


def apply_runtime_settings(model: RFDETR, model_config: ModelConfig) -> None:
    """Settings that change how a built model trains, not its weights."""
    for module in model.modules():
        if isinstance(module, WindowedViT):
            module.gradient_checkpointing = model_config.gradient_checkpointing
        elif isinstance(module, ViTBlock):
            module.drop_path_rate = model_config.drop_path


def build_criterion(config: RunConfig) -> SetCriterion:
    """Matcher and set losses with the run's weights (upstream's defaults)."""
    model, train = config.model, config.train
    seg = model.segmentation_head
    matcher = HungarianMatcher(
        cost_class=train.set_cost_class,
        cost_bbox=train.set_cost_bbox,
        cost_giou=train.set_cost_giou,
        focal_alpha=train.focal_alpha,
        cost_mask_ce=train.mask_ce_loss_coef,
        cost_mask_dice=train.mask_dice_loss_coef,
        mask_point_sample_ratio=train.mask_point_sample_ratio,
    )
    weights = build_weight_dict(
        model.dec_layers,
        two_stage=model.two_stage,
        segmentation=seg,
        aux_loss=train.aux_loss,
        cls_loss_coef=train.cls_loss_coef,
        bbox_loss_coef=train.bbox_loss_coef,
        giou_loss_coef=train.giou_loss_coef,
        mask_ce_loss_coef=train.mask_ce_loss_coef,
        mask_dice_loss_coef=train.mask_dice_loss_coef,
    )
    return SetCriterion(
        model.num_classes,
        matcher,
        weights,
        focal_alpha=train.focal_alpha,
        losses=["labels", "boxes", *(["masks"] if seg else [])],
        group_detr=model.group_detr,
        ia_bce_loss=train.ia_bce_loss,
        mask_point_sample_ratio=train.mask_point_sample_ratio,
    )


class TrainBatches:
    """The training split's loader (workers kept across epochs), each batch a whole optimizer step.

    Shuffling depends only on ``(seed, epoch)``, so a resumed run sees the same batches as an
    uninterrupted one.
    """

    def __init__(
        self, dataset: DetectionDataset, config: RunConfig, info: DistInfo, device: torch.device
    ) -> None:
        self.seed = config.train.seed
        self.step_images = config.effective_batch_size()
        self.generator = torch.Generator()
        self.sampler: Sampler[int]
        if info.enabled:
            self.sampler = DistributedTrainSampler(
                len(dataset),
                config.effective_batch_size(info.world_size),
                info.rank,
                info.world_size,
                self.seed,
            )
        else:
            self.sampler = make_train_sampler(
                len(dataset), self.step_images, generator=self.generator
            )
        self.loader = EpochLoader(
            dataset,
            self.sampler,
            self.step_images,
            num_workers=config.data.num_workers,
            # Pinned host memory only helps copies to a GPU; pinning for a CPU run wastes memory.
            pin_memory=device.type == "cuda",
            seed=self.seed,
        )

    def __len__(self) -> int:
        return len(self.sampler) // self.step_images

    def epoch(self, epoch: int) -> DataLoader:
        """The loader of ``epoch`` (re-seeds the shuffling and the augmentation)."""
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)
        if isinstance(self.sampler, DistributedTrainSampler):
            self.sampler.set_epoch(epoch)
        return self.loader.epoch(epoch)


def instance_run_config(model_config: ModelConfig, options: dict[str, object]) -> RunConfig:
    """The `RunConfig` of ``model.train(**options)`` on a model built from ``model_config``.

    Raises:
        ConfigError: an unknown option (with the closest name), an invalid value, or an option
            that would need another architecture than the model already built.
    """
    if "pretrain_weights" in options:
        raise ConfigError(
            "pretrain_weights is a constructor argument: RFDETRNano(pretrain_weights=...)"
            ".train(...); to continue an interrupted run pass resume=.../checkpoint.pth"
        )
    if "num_classes" in options:
        raise ConfigError(
            "num_classes comes from the dataset in train(); the class head is re-initialised "
            "when the dataset has another class count"
        )
    config = RunConfig.from_kwargs(model_config, **options)
    for key in ModelConfig.model_fields:
        if key in RUNTIME_MODEL_FIELDS or key == "name":
            continue
        if getattr(config.model, key) != getattr(model_config, key):
            raise ConfigError(
                f"option '{key}' changes the architecture of the model already built; pass it "
                f"to the constructor instead, e.g. RFDETRNano({key}=...)"
            )
    return config
