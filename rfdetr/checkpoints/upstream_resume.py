"""Resuming a run from upstream rfdetr 1.11's Lightning ``last.ckpt``, converted into the layout
of our ``checkpoint.pth``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rfdetr.checkpoints.formats import (
    CHECKPOINT_FORMAT,
    UPSTREAM_MODEL_FIELDS,
    CheckpointError,
    extract_state_dict,
)

UPSTREAM_RESUME = "upstream-lightning"  # the ``format`` of a converted resume state


def upstream_resume_state(raw: dict[str, Any], file: Path) -> dict[str, Any] | None:
    """Our resume layout from upstream rfdetr 1.11's Lightning ``last.ckpt``; None for other files.

    Upstream keeps the weights under ``state_dict`` (``model.`` prefix), one AdamW state and one
    ``LambdaLR`` state (``optimizer_states``, ``lr_schedulers``; stepped per optimizer step, as
    ours), the EMA in ``callbacks["RFDETREMACallback"]`` (an ``AveragedModel``: ``module.model.``
    prefix, ``n_averaged`` = our ``updates``, same decay ramp) and the last finished 0-based
    ``epoch``. The optimizer groups are ours in another order: :func:`upstream_optimizer_in`.

    Raises:
        CheckpointError: a Lightning file without exactly one optimizer and one scheduler.
    """
    if raw.get("format") == CHECKPOINT_FORMAT or not isinstance(raw.get("state_dict"), dict):
        return None
    optimizers, schedulers = raw.get("optimizer_states") or [], raw.get("lr_schedulers") or []
    if len(optimizers) != 1 or len(schedulers) != 1:
        raise CheckpointError(
            f"{file}: an upstream Lightning checkpoint with {len(optimizers)} optimizer and "
            f"{len(schedulers)} scheduler states; a resume needs exactly one of each (upstream's "
            "AdamW and LambdaLR); pass the file as pretrain_weights to start a new run from it"
        )
    _, weights = extract_state_dict(raw, file)
    callback = (raw.get("callbacks") or {}).get("RFDETREMACallback") or {}
    averaged = callback.get("average_model_state_dict") or {}
    prefix = "module.model."
    ema = {k.removeprefix(prefix): v for k, v in averaged.items() if k.startswith(prefix)}
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    return {
        "format": UPSTREAM_RESUME,
        "model": _drop_empty(weights),
        "ema": {"module": _drop_empty(ema), "updates": int(averaged["n_averaged"])}
        if ema
        else None,
        "optimizer": optimizers[0],
        "scheduler": schedulers[0],
        "epoch": int(raw["epoch"]),
        "global_step": int(raw["global_step"]),
        "class_names": args.get("class_names"),
        "model_config": raw.get("model_config") or {},
        "config": None,  # not our RunConfig: check with upstream_resume_mismatch
    }


def _drop_empty(weights: dict[str, Any]) -> dict[str, Any]:
    # without upstream's empty keypoint buffer, which our detectors do not have
    return {k: v for k, v in weights.items() if not (k == "_kp_active_mask" and v.numel() == 0)}


def upstream_resume_mismatch(
    state: Mapping[str, Any], model: Mapping[str, Any], class_names: list[str]
) -> str | None:
    """Why an upstream resume state does not fit this run (architecture or classes), or None."""
    saved = state.get("model_config") or {}
    for key in set(UPSTREAM_MODEL_FIELDS) - {"resolution", "num_select"}:
        if key in saved and key in model and saved[key] != model[key]:
            want = f"{key}={saved[key]!r}"
            return f"the checkpoint's model has {want}, this run {model[key]!r}; set {want}"
    names = state.get("class_names")
    if names is not None and list(names) != list(class_names):
        return (
            f"the checkpoint was trained on the classes {list(names)}, this dataset has "
            f"{class_names}; resume on the same dataset classes"
        )
    return None


def upstream_optimizer_in(
    state: dict[str, Any], current: Mapping[str, Any], names: list[str], file: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upstream's optimizer and scheduler states, renumbered for our optimizer.

    Upstream (``training/param_groups.py``) and we build the same AdamW groups (one per distinct
    learning rate and weight decay, parameters in ``named_parameters`` order); upstream lists
    head/neck first, then encoder layers, then decoder, we by first appearance. Groups are
    matched by base rate (``initial_lr``), weight decay and size; inside a group upstream's
    parameters follow its module order, which is the key order of its state dict.

    ``state`` comes from :func:`upstream_resume_state`, ``current`` is this run's fresh
    ``optimizer.state_dict()``, ``names`` the parameter name of each of its parameter ids.

    Raises:
        CheckpointError: a group of ours has no upstream counterpart (other learning rates,
            frozen parameters, another model), or a moment's shape is not its parameter's.
    """
    saved, schedule = state["optimizer"], dict(state["scheduler"])
    position = {name: index for index, name in enumerate(state["model"])}
    free = list(range(len(saved["param_groups"])))
    order, groups, moments = [], [], {}
    for ours in current["param_groups"]:
        match = next((j for j in free if _same_group(saved["param_groups"][j], ours)), None)
        if match is None:
            raise CheckpointError(
                f"{file}: upstream's optimizer has no group with lr {ours['initial_lr']:.3g}, "
                f"weight decay {ours['weight_decay']:.3g} and {len(ours['params'])} parameters; "
                "resume with upstream's lr, lr_encoder, weight_decay and layer decays"
            )
        free.remove(match)
        theirs = saved["param_groups"][match]
        order.append(match)
        groups.append(
            {**theirs, **{k: ours[k] for k in ("params", "fused", "foreach", "name") if k in ours}}
        )
        in_their_order = sorted(ours["params"], key=lambda pid: position.get(names[pid], -1))
        for mine, their_id in zip(in_their_order, theirs["params"], strict=True):
            moment = saved["state"].get(their_id)
            if moment is None:
                continue
            if moment["exp_avg"].shape != state["model"][names[mine]].shape:
                raise CheckpointError(
                    f"{file}: upstream's optimizer state does not line up with the parameter "
                    f"{names[mine]} (shape {list(moment['exp_avg'].shape)}); it cannot resume here"
                )
            moments[mine] = moment
    for key in ("base_lrs", "_last_lr"):
        if isinstance(schedule.get(key), list):
            schedule[key] = [schedule[key][j] for j in order]
    schedule["lr_lambdas"] = [None] * len(order)  # ours are restored by the caller
    return {"state": moments, "param_groups": groups}, schedule


def _same_group(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> bool:
    return (
        len(theirs["params"]) == len(ours["params"])
        and math.isclose(theirs["initial_lr"], ours["initial_lr"], rel_tol=1e-9)
        and math.isclose(theirs["weight_decay"], ours["weight_decay"], rel_tol=1e-9, abs_tol=1e-12)
    )
