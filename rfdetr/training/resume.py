"""Resuming a run from ``checkpoint.pth`` (or upstream 1.11's ``last.ckpt``): compatibility
checks, finished runs, and restoring every state that makes the continuation identical to an
uninterrupted run."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rfdetr.checkpoints.files import UPSTREAM_RESUME
from rfdetr.checkpoints.formats import UPSTREAM_MODEL_FIELDS, CheckpointError, one_line
from rfdetr.config import RUNTIME_MODEL_FIELDS, ConfigError, RunConfig
from rfdetr.errors import UserError
from rfdetr.training.ema import ModelEMA
from rfdetr.training.outputs import TrainResult
from rfdetr.training.runtime import restore_rng_state
from rfdetr.training.step import TrainSession

logger = logging.getLogger(__name__)


def check_resume_matches(state: dict[str, Any], config: RunConfig) -> None:
    """Raise ConfigError when the resume state's architecture or classes are not this run's."""
    where = config.train.resume
    if state.get("format") == UPSTREAM_RESUME:  # no RunConfig inside: compare what it records
        saved_model, model = state.get("model_config") or {}, config.model.model_dump(mode="json")
        for key in set(UPSTREAM_MODEL_FIELDS) - {"resolution", "num_select"}:
            if key in saved_model and key in model and saved_model[key] != model[key]:
                want = f"{key}={saved_model[key]!r}"
                raise ConfigError(
                    f"{where}: the checkpoint's model has {want}, this run {model[key]!r}; "
                    f"set {want}"
                )
        names, class_names = state.get("class_names"), (config.data.class_map or {}).get("names")
        if names is not None and list(names) != list(class_names or []):
            raise ConfigError(
                f"{where}: the checkpoint was trained on the classes {list(names)}, this dataset "
                f"has {class_names or []}; resume on the same dataset classes"
            )
        return
    saved = RunConfig.model_validate(state["config"])
    for key, value in config.model.model_dump().items():
        if key not in RUNTIME_MODEL_FIELDS and getattr(saved.model, key) != value:
            raise ConfigError(
                f"{where}: the checkpoint's model has {key}={getattr(saved.model, key)!r}, this "
                f"run {value!r}; resume with the same model"
            )
    if saved.data.class_map != config.data.class_map:
        raise ConfigError(
            f"{where}: the checkpoint was trained on other classes ({saved.data.class_map}); "
            "resume on the same dataset classes"
        )


def finished_result(
    state: dict[str, Any], config: RunConfig, class_names: list[str]
) -> TrainResult | None:
    """The result of a resumed run with nothing left to train (None: there is)."""
    done = int(state["epoch"]) + 1
    if not state.get("stopped_early") and done < config.train.epochs:
        return None
    reason = "stopped early" if state.get("stopped_early") else f"epochs={config.train.epochs}"
    logger.warning(
        "%s: the run already finished (%d epochs completed, %s); nothing to train. Pass a "
        "larger epochs to continue it.",
        config.train.resume,
        done,
        reason,
    )
    return TrainResult.from_run_dir(
        Path(config.train.resume).parent,
        class_names=class_names,
        epochs_completed=done,
        stopped_early=bool(state.get("stopped_early")),
        already_finished=True,
    )


@contextmanager
def _loading(file: object, part: str) -> Iterator[None]:
    """What torch's loaders refuse in a resume file's ``part``, as a one-line CheckpointError
    (the types were checked on reading; shapes only the live objects can tell)."""
    try:
        yield
    except UserError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(
            f"{file}: cannot resume from it: its {part} state does not fit this run "
            f"({one_line(err)}); resume from an earlier checkpoint"
        ) from None


def restore(session: TrainSession, state: dict[str, Any]) -> int:
    """Load a resume checkpoint into the session; returns the first epoch to train.

    Raises:
        CheckpointError: a part of the state does not fit this run's model or optimizer.
    """
    source = session.config.train.resume
    if state.get("format") == UPSTREAM_RESUME:
        name_of = {id(p): n for n, p in session.model.named_parameters()}
        groups = session.optimizer.param_groups
        names = [name_of[id(p)] for group in groups for p in group["params"]]
        current = session.optimizer.state_dict()
        with _loading(source, "optimizer"):
            optimizer, scheduler = upstream_optimizer_in(state, current, names, str(source))
        state = {**state, "optimizer": optimizer, "scheduler": scheduler}
    with _loading(source, "model"):
        session.model.load_state_dict(state["model"], strict=True)
    if session.ema is not None:
        if state.get("ema"):
            with _loading(source, "EMA"):
                session.ema.load_state_dict(state["ema"])
        else:
            logger.warning("the checkpoint has no EMA weights; the EMA restarts from the model")
            session.ema = ModelEMA(session.model, session.ema.decay, session.ema.tau)
    with _loading(source, "optimizer"):
        session.optimizer.load_state_dict(state["optimizer"])
    schedule = session.scheduler.lr_lambdas
    with _loading(source, "scheduler"):
        session.scheduler.load_state_dict(state["scheduler"])
    session.scheduler.lr_lambdas = schedule  # this run's schedule (e.g. a longer cosine)
    with _loading(source, "grad scaler"):
        if state.get("scaler") and session.scaler.is_enabled():
            session.scaler.load_state_dict(state["scaler"])
    session.global_step = int(state["global_step"])
    trackers = state.get("trackers") or {}
    with _loading(source, "trackers"):
        for key, value in (trackers.get("best") or {}).items():
            setattr(session.tracker, key, value)
        if session.stopper is not None and trackers.get("early_stopping"):
            session.stopper.load_state_dict(trackers["early_stopping"])
    streams, rank = state.get("rng") or [], session.dist.rank
    if streams:
        with _loading(source, "random"):
            restore_rng_state(streams[rank if rank < len(streams) else 0], session.device)
    epoch = int(state["epoch"]) + 1
    logger.info("resuming from %s at epoch %d", source, epoch)
    return epoch


def upstream_optimizer_in(
    state: dict[str, Any], current: Mapping[str, Any], names: list[str], file: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upstream's optimizer and scheduler states, renumbered for our optimizer.

    Upstream (``training/param_groups.py``) and we build the same AdamW groups (one per distinct
    learning rate and weight decay, parameters in ``named_parameters`` order); upstream lists
    head/neck first, then encoder layers, then decoder, we by first appearance. Groups are
    matched by base rate (``initial_lr``), weight decay and size; inside a group upstream's
    parameters follow its module order, which is the key order of its state dict.

    ``state`` comes from :func:`rfdetr.checkpoints.files.upstream_resume_state`, ``current`` is
    this run's fresh ``optimizer.state_dict()``, ``names`` the name of each of its parameter ids.

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
