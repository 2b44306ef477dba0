"""Resume from upstream rfdetr 1.11's Lightning ``last.ckpt``: it continues like our own file.

The upstream layout re-created here is what upstream 1.11.2 wrote in a real run (keys read from
its ``last.ckpt``): weights under ``state_dict`` with a ``model.`` prefix in upstream's module
order, ``optimizer_states[0]`` with the same AdamW groups in upstream's order (head/neck, encoder
layers, decoder; ``training/param_groups.py``), each group's parameters in module order,
``lr_schedulers[0]`` (a ``LambdaLR``), ``callbacks["RFDETREMACallback"]`` (an ``AveragedModel``
state dict: ``n_averaged`` + ``module.model.*``), ``epoch``, ``global_step``, ``args`` (a dict
with ``class_names``), ``model_config``. ``benchmarks/upstream_handoff.py`` resumes a file the
real upstream package wrote.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from rfdetr.checkpoints import read_checkpoint
from rfdetr.checkpoints.formats import UPSTREAM_MODEL_FIELDS
from rfdetr.config import ConfigError, RunConfig
from rfdetr.models.build import build_model
from rfdetr.training import fit
from rfdetr.training.optim import param_groups


def _as_upstream_lightning(ours: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """Our ``checkpoint.pth`` re-laid as upstream's Lightning ``last.ckpt``."""
    model = build_model(config.model)
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups_of_ours = param_groups(model, config.train, config.model)
    names_by_group = [[name_of[id(p)] for p in g["params"]] for g in groups_of_ours]
    our_ids = {}
    for name in (n for group in names_by_group for n in group):
        our_ids[name] = len(our_ids)
    module_order = list(ours["model"])
    random.Random(0).shuffle(module_order)  # upstream registers its modules in another order
    position = {name: i for i, name in enumerate(module_order)}
    groups, moments, order = [], {}, list(reversed(range(len(names_by_group))))
    for g in order:
        saved = {k: v for k, v in ours["optimizer"]["param_groups"][g].items() if k != "name"}
        names = sorted(names_by_group[g], key=position.__getitem__)
        ids = list(range(sum(len(group["params"]) for group in groups), len(our_ids))[: len(names)])
        for new_id, name in zip(ids, names, strict=True):
            if our_ids[name] in ours["optimizer"]["state"]:  # unused parameters have none
                moments[new_id] = ours["optimizer"]["state"][our_ids[name]]
        groups.append({**saved, "params": ids})
    scheduler = dict(ours["scheduler"])
    for key in ("base_lrs", "_last_lr"):
        scheduler[key] = [scheduler[key][g] for g in order]
    averaged = {f"module.model.{k}": v for k, v in ours["ema"]["module"].items()}
    model = config.model.model_dump(mode="json")
    return {
        "epoch": ours["epoch"],
        "global_step": ours["global_step"],
        "state_dict": {f"model.{k}": ours["model"][k] for k in module_order},
        "optimizer_states": [{"state": moments, "param_groups": groups}],
        "lr_schedulers": [scheduler],
        "callbacks": {
            "RFDETREMACallback": {
                "latest_update_step": ours["ema"]["updates"],
                "average_model_state_dict": {
                    "n_averaged": torch.tensor(ours["ema"]["updates"]),
                    **averaged,
                },
            }
        },
        "args": {"class_names": list(ours["class_names"]), "lr": config.train.lr},
        "model_name": "RFDETRNano",
        "model_config": {k: model[k] for k in UPSTREAM_MODEL_FIELDS},
        "rfdetr_version": "1.11.2",
    }


def test_upstream_last_ckpt_resumes_like_our_checkpoint(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    first = fit(tiny_config(shapes_coco, tmp_path / "first", epochs=1))
    ours = torch.load(first.output_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    upstream = tmp_path / "upstream" / "last.ckpt"
    upstream.parent.mkdir()
    torch.save(_as_upstream_lightning(ours, tiny_config(shapes_coco, tmp_path)), upstream)
    assert read_checkpoint(upstream).class_names == ours["class_names"]  # from "args"

    ref = fit(
        tiny_config(shapes_coco, tmp_path / "ref", resume=str(first.output_dir / "checkpoint.pth"))
    )
    got = fit(tiny_config(shapes_coco, tmp_path / "got", resume=str(upstream)))
    assert got.epochs_completed == ref.epochs_completed == 2
    a = torch.load(ref.output_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    b = torch.load(got.output_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"]
    for part in ("model", "ema"):
        x = a[part] if part == "model" else a[part]["module"]
        y = b[part] if part == "model" else b[part]["module"]
        assert max(float((x[k] - y[k]).abs().max()) for k in x if x[k].numel()) <= 1e-6, part


def test_upstream_last_ckpt_of_another_model_is_refused(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    first = fit(tiny_config(shapes_coco, tmp_path / "first", epochs=1))
    ours = torch.load(first.output_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    raw = _as_upstream_lightning(ours, tiny_config(shapes_coco, tmp_path))
    raw["model_config"]["positional_encoding_size"] = 4
    torch.save(raw, tmp_path / "last.ckpt")
    with pytest.raises(ConfigError, match="positional_encoding_size=4, this run 8") as info:
        fit(tiny_config(shapes_coco, tmp_path / "got", resume=str(tmp_path / "last.ckpt")))
    assert "\n" not in str(info.value)
