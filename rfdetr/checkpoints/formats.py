"""Helpers of :func:`rfdetr.checkpoints.read_checkpoint` (which documents the formats): safe
unpickling, format detection, class-id mapping. Nothing here unpickles arbitrary objects."""

from __future__ import annotations

import argparse
import logging
import pickle
import re
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rfdetr.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES, COCO_NUM_LOGITS
from rfdetr.errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rfdetr.checkpoint.v1"  # the ``format`` key of the files we write

UPSTREAM_SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace, types.SimpleNamespace)
"""The only non-builtin Python types a checkpoint may contain: attribute bags whose unpickling
only sets ``__dict__`` (no code runs). ``argparse.Namespace`` is the ``args`` of the hosted weights
and of upstream 1.4.x checkpoints (``torch.serialization.get_unsafe_globals_in_checkpoint``
reports exactly this global); upstream's own safe loader admits ``types.SimpleNamespace`` for
some upstream-trained ``checkpoint_best_total.pth``. Upstream 1.11.x ``.pth`` files need neither.
"""

_ONE_LINE_LIMIT = 160


class CheckpointError(UserError, ValueError):
    """A file is not a usable checkpoint, or does not fit the model. The message is one line."""


UPSTREAM_MODEL_FIELDS = (
    "encoder", "out_feature_indexes", "patch_size", "num_windows", "positional_encoding_size",
    "resolution", "projector_scale", "layer_norm", "hidden_dim", "sa_nheads", "ca_nheads",
    "dec_n_points", "dec_layers", "num_queries", "num_select", "group_detr", "two_stage",
    "bbox_reparam", "lite_refpoint_refine", "segmentation_head", "mask_downsample_ratio",
    "num_classes",
)  # fmt: skip
"""`ModelConfig` fields that upstream rfdetr 1.11.2's ``ModelConfig`` has too, with the same
meaning (its ``rfdetr/config.py``); ``dim_feedforward`` and ``drop_path`` are not among them."""

_UPSTREAM_ARGS = ("num_classes", "num_queries", "group_detr", "patch_size", "segmentation_head")
_UPSTREAM_CLASS_WORDS = {"seg": "Seg", "xlarge": "XLarge", "2xlarge": "2XLarge"}


def upstream_fields(config: Mapping[str, Any], class_names: list[str] | None) -> dict[str, Any]:
    """What upstream rfdetr 1.11.2 reads from a checkpoint, as plain data (no Namespace).

    ``RFDETRNano(pretrain_weights=path)`` (upstream ``models/weights.py``
    ``load_pretrain_weights``) reads ``args`` (``class_names``, ``num_queries``, ``group_detr``,
    ``patch_size``, ``segmentation_head``); ``from_checkpoint(path)`` (``detr.py``) picks the
    class by ``model_name`` and builds the model from ``model_config``.

    Args:
        config: Our run config (architecture under ``"model"``) or a bare model config.
        class_names: Name of each 0-based class id, or None.

    Returns:
        ``args``, ``model_config`` and, for upstream's sizes, ``model_name`` (e.g.
        ``"RFDETRNano"``); empty when ``config`` holds no model fields.
    """
    model = config.get("model", config)
    if not isinstance(model, Mapping):
        return {}
    fields = {key: model[key] for key in UPSTREAM_MODEL_FIELDS if key in model}
    if not fields:
        return {}
    args: dict[str, Any] = {key: fields[key] for key in _UPSTREAM_ARGS if key in fields}
    if class_names is not None:
        args["class_names"] = list(class_names)
    result: dict[str, Any] = {"args": args, "model_config": fields}
    words = str(model.get("name", "")).split("-")
    if all(
        w in {"nano", "small", "medium", "large", "base", *_UPSTREAM_CLASS_WORDS} for w in words
    ):
        result["model_name"] = "RFDETR" + "".join(
            _UPSTREAM_CLASS_WORDS.get(w, w.title()) for w in words
        )
    return result


def safe_load(file: Path) -> Any:
    """``torch.load(weights_only=True)`` with the scoped allow-list; one-line errors."""
    if file.stat().st_size == 0:
        raise CheckpointError(f"{file}: the file is empty; download or copy it again")
    try:
        allowed = list(UPSTREAM_SAFE_GLOBALS)
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            # Foreign pickles make torch warn about the protocol before it fails; we raise instead.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            names = ", ".join(f"{t.__module__}.{t.__qualname__}" for t in UPSTREAM_SAFE_GLOBALS)
            raise CheckpointError(
                f"{file}: refused to load: the file needs the Python global '{found.group(1)}', "
                f"which is not on the safe allow-list ({names}); re-save the weights as plain "
                "data (tensors, dicts, lists, numbers, strings) with torch.save"
            ) from None
        raise CheckpointError(
            f"{file}: not a PyTorch checkpoint (invalid or unsupported pickle data); check that "
            "the file is a .pth written by torch.save, or download it again"
        ) from None
    except Exception as err:  # any failure to parse the bytes means a damaged or foreign file
        reason = one_line(err) or type(err).__name__
        raise CheckpointError(
            f"{file}: cannot read checkpoint, it is truncated or corrupt ({reason}); "
            "download or copy it again"
        ) from None


def extract_state_dict(raw: dict[str, Any], file: Path) -> tuple[str, dict[str, Any]]:
    """Find the weights and name the format."""
    model = raw.get("model")
    if isinstance(model, dict):
        if raw.get("format") == CHECKPOINT_FORMAT or ("config" in raw and "args" not in raw):
            return "rfdetr", dict(model)
        if isinstance(raw.get("args"), (argparse.Namespace, types.SimpleNamespace)):
            return "upstream-legacy", dict(model)
        return "upstream", dict(model)
    lightning = raw.get("state_dict")
    if model is None and isinstance(lightning, dict):
        weights = {}
        for key, value in lightning.items():
            if isinstance(key, str) and key.startswith("model."):
                weights[key.removeprefix("model.").removeprefix("_orig_mod.")] = value
        if weights:
            return "upstream-lightning", weights
    top = ", ".join(sorted(str(k) for k in raw)[:8]) or "nothing"
    raise CheckpointError(
        f"{file}: not an RF-DETR checkpoint: no 'model' state dict (top-level keys: {top}); "
        "a bare state dict must be wrapped and re-saved as torch.save({'model': state_dict}, path)"
    )


def check_tensors(state_dict: Any, file: Path, what: str = "model") -> None:
    """Names map to plain tensors (:func:`tensor_problem`), every floating one finite."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"{file}: the '{what}' state dict is not a dict of tensors (found "
            f"{type(state_dict).__name__})"
        )
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{file}: the '{what}' state dict holds a {type(value).__name__} under {key!r}; "
                "a state dict maps names to tensors only"
            )
        problem = tensor_problem(value)
        if problem:
            raise CheckpointError(f"{file}: the '{what}' state dict's {key!r} is {problem}")
    floating = [(k, v) for k, v in state_dict.items() if v.is_floating_point() and v.numel()]
    # One fused max-|x| per tensor (NaN and inf propagate; finite values cannot overflow), in
    # place of an isfinite() mask per tensor: 3-4x less time on a model's 30M weights.
    peaks = torch._foreach_norm([v for _, v in floating], float("inf")) if floating else []
    bad = [k for (k, _), peak in zip(floating, peaks, strict=True) if not bool(peak.isfinite())]
    if bad:
        raise CheckpointError(
            f"{file}: weights are not finite (NaN or inf) in {len(bad)} tensor(s), first "
            f"{bad[0]!r}; the run diverged; use an earlier checkpoint or retrain"
        )


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why ``tensor`` is not a dense CPU tensor of a real dtype within its storage (else None).

    A file can declare a shape of 10**12 elements over a one-element storage with zero strides,
    which every whole-tensor operation would materialise (terabytes from a few hundred bytes).
    """
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"a {tensor.layout} tensor{' (quantized)' if tensor.is_quantized else ''}, not dense"
    if tensor.device.type != "cpu":
        return f"a tensor on the '{tensor.device.type}' device, without data"
    if tensor.is_complex():
        return f"a {tensor.dtype} tensor; weights are real numbers"
    needed = tensor.numel() * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    if needed > stored:
        return (
            f"a tensor of shape {list(tensor.shape)} ({needed} bytes) declared over {stored} "
            "bytes of data"
        )
    return None


def extract_config(
    raw: dict[str, Any], fmt: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(model config, upstream args) as plain dicts."""
    if fmt == "rfdetr":
        config = raw.get("config")
        return (dict(config) if isinstance(config, dict) else None), None
    args_obj = raw.get("args")
    if fmt == "upstream-lightning" and args_obj is None:  # 1.11.0 and earlier: no "args"
        args_obj = raw.get("hyper_parameters")
    if isinstance(args_obj, (argparse.Namespace, types.SimpleNamespace)):
        args: dict[str, Any] | None = dict(vars(args_obj))
    else:
        args = dict(args_obj) if isinstance(args_obj, dict) else None
    model_config = raw.get("model_config")
    config = dict(model_config) if isinstance(model_config, dict) else args
    return config, args


def class_mapping(
    raw_names: Any, num_classes: int, fmt: str, args: dict[str, Any] | None, file: Path
) -> tuple[list[str] | None, list[int] | None]:
    """0-based class names and, where class id != logit column, the column of each class."""
    num_logits = num_classes + 1
    if isinstance(raw_names, dict) and raw_names:
        return _names_from_id_dict(raw_names, num_logits, file)
    if isinstance(raw_names, (list, tuple)) and raw_names:
        names = [str(n) for n in raw_names]
        if len(names) > num_logits:
            logger.warning(
                "%s: %d class names for a head of %d classes; ignoring the names",
                file,
                len(names),
                num_classes,
            )
            return None, None
        if names == COCO_CLASS_NAMES and num_logits == COCO_NUM_LOGITS:
            return names, list(COCO_CATEGORY_IDS)
        roboflow_coco = (args or {}).get("dataset_file") == "roboflow"
        if fmt == "upstream-legacy" and roboflow_coco and len(names) + 2 == num_logits:
            # Upstream 1.4.x trained COCO-format datasets on the raw category ids 1..N.
            return names, list(range(1, len(names) + 1))
        return names, None
    if fmt != "rfdetr" and num_logits == COCO_NUM_LOGITS:
        logger.info("%s: no class names stored; assuming the COCO-pretrained 91-way head", file)
        return list(COCO_CLASS_NAMES), list(COCO_CATEGORY_IDS)
    return None, None


def _names_from_id_dict(
    raw_names: dict[Any, Any], num_logits: int, file: Path
) -> tuple[list[str] | None, list[int] | None]:
    # {category id: name} (upstream 1.4.x COCO training) -> names + logit columns
    try:
        pairs = sorted((int(k), str(v)) for k, v in raw_names.items())
    except (TypeError, ValueError):
        logger.warning("%s: class_names dict has non-integer ids; ignoring the names", file)
        return None, None
    ids = [i for i, _ in pairs]
    names = [n for _, n in pairs]
    if ids[0] < 0 or ids[-1] >= num_logits:
        logger.warning(
            "%s: class ids %d..%d do not fit a head of %d columns; ignoring the names",
            file,
            ids[0],
            ids[-1],
            num_logits,
        )
        return None, None
    return names, (None if ids == list(range(len(ids))) else ids)


def one_line(err: BaseException) -> str:
    """The first sentence of an exception message, on one line and short."""
    text = " ".join(str(err).split()).split(". ")[0]
    return text if len(text) <= _ONE_LINE_LIMIT else text[: _ONE_LINE_LIMIT - 3] + "..."
