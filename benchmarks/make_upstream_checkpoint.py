"""Write an *upstream* RF-DETR model with random weights to a file in an upstream checkpoint format.

Runs under the interpreter of a virtual environment that has the upstream package installed
(``rfdetr==1.11.2`` from PyPI), not under ours::

    HF_HUB_OFFLINE=1 /work/upstream-venv/bin/python benchmarks/make_upstream_checkpoint.py \
        RFDETRNano /tmp/nano_old.pth --format old

Formats:

``old``
    What the official hosted weights and upstream 1.4.x training wrote:
    ``{"model", "optimizer", "lr_scheduler", "epoch", "args"}`` where ``args`` is a pickled
    ``argparse.Namespace`` of plain values.
``new``
    Upstream 1.11.x ``checkpoint_best_total.pth``: the payload of upstream's own
    ``BestModelCallback``, stripped by upstream's own ``strip_checkpoint`` (``model``, ``args`` as a
    dict, ``model_name``, ``model_config``, ``rfdetr_version``, Lightning keys,
    ``best_total_source``).

The upstream package writes the file through its own code wherever it has a function for it, so the
result is what a user of that version would have on disk. The parity script loads the same file
into the upstream model and into ours.
"""

from __future__ import annotations

import argparse
import enum
import os
import pathlib
import sys
import types
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def _plain(value: Any) -> Any:
    """Turn enum members and paths into the plain values an argparse-built Namespace holds."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _non_plain_types(values: dict[str, Any]) -> dict[str, str]:
    """Field name -> type name for every value that is not a builtin scalar or container."""
    plain = (bool, int, float, str, type(None), list, tuple, dict)
    return {
        k: f"{type(v).__module__}.{type(v).__qualname__}"
        for k, v in values.items()
        if type(v) not in plain
    }


def _build(model_class: str) -> tuple[Any, torch.nn.Module]:
    import rfdetr

    cls = getattr(rfdetr, model_class)
    wrapper = cls(pretrain_weights=None, device="cpu")
    return wrapper, wrapper.model.model


def _add_noise(module: torch.nn.Module, std: float, seed: int) -> None:
    """Perturb every floating tensor so zero- or constant-initialised layers are exercised too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * std)


def _train_config(class_names: list[str] | None, segmentation: bool) -> Any:
    from rfdetr.config import SegmentationTrainConfig, TrainConfig

    cls = SegmentationTrainConfig if segmentation else TrainConfig
    return cls(dataset_dir="/data/dataset", output_dir="/data/output", class_names=class_names)


def _legacy_payload(wrapper: Any, net: torch.nn.Module, class_names: Any) -> dict[str, Any]:
    """The 1.4.x layout: weights, optimizer and scheduler state, epoch, Namespace args."""
    from rfdetr._namespace import _namespace_from_configs

    mc = wrapper.model_config
    tc = _train_config(None, bool(getattr(mc, "segmentation_head", False)))
    raw = vars(_namespace_from_configs(mc, tc))
    odd = _non_plain_types(raw)
    if odd:
        print(f"note: upstream 1.11 namespace holds non-plain values (converted): {odd}")
    args = {k: _plain(v) for k, v in raw.items()}
    # What 1.4.x training recorded for COCO: dataset_file "coco" and a COCO id -> name dict.
    args.update(dataset_file="coco", num_classes=int(net.class_embed.bias.shape[0]) - 1)
    if class_names is not None:
        args["class_names"] = class_names
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: 1.0)
    return {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": 11,
        "args": argparse.Namespace(**args),
    }


def _write_new(wrapper: Any, net: torch.nn.Module, class_names: Any, out: pathlib.Path) -> None:
    """The 1.11.x ``checkpoint_best_total.pth``, written and stripped by upstream's own code."""
    from rfdetr.training.callbacks.best_model import BestModelCallback
    from rfdetr.utilities.state_dict import strip_checkpoint

    mc = wrapper.model_config
    segmentation = bool(getattr(mc, "segmentation_head", False))
    state = net.state_dict()
    trainer = types.SimpleNamespace(
        callbacks=[],
        current_epoch=11,
        global_step=1200,
        datamodule=types.SimpleNamespace(class_names=class_names),
    )
    pl_module = types.SimpleNamespace(
        model=net, model_config=mc, train_config=_train_config(None, segmentation)
    )
    args_dict, model_name, model_config = BestModelCallback._resolve_model_description(
        trainer, pl_module, state
    )
    payload = BestModelCallback._build_checkpoint_payload(
        state, args_dict, trainer, model_name=model_name, model_config_dict=model_config
    )
    torch.save(payload, out)
    strip_checkpoint(out, extra_metadata={"best_total_source": "regular"})


def _parse_class_names(text: str | None) -> Any:
    if text is None or text == "none":
        return None
    if text == "coco-dict":
        from rfdetr.assets.coco_classes import COCO_CLASSES

        return dict(COCO_CLASSES)
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_class", help="upstream class name, e.g. RFDETRNano or RFDETRSegNano")
    parser.add_argument("output", type=pathlib.Path, help="where to write the .pth file")
    parser.add_argument("--format", choices=("old", "new"), default="new")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random init")
    parser.add_argument("--noise", type=float, default=0.0, help="std of noise added to weights")
    parser.add_argument(
        "--class-names",
        default=None,
        help="'none' (default), 'coco-dict' (COCO id -> name, as 1.4 COCO training stored), "
        "or a comma-separated list",
    )
    ns = parser.parse_args(argv)
    torch.manual_seed(ns.seed)
    wrapper, net = _build(ns.model_class)
    if ns.noise > 0:
        _add_noise(net, ns.noise, ns.seed)
    class_names = _parse_class_names(ns.class_names)
    ns.output.parent.mkdir(parents=True, exist_ok=True)
    if ns.format == "old":
        torch.save(_legacy_payload(wrapper, net, class_names), ns.output)
    else:
        _write_new(wrapper, net, class_names, ns.output)
    size_mb = ns.output.stat().st_size / 1e6
    print(f"wrote {ns.output} ({ns.format} format, {ns.model_class}, {size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
