"""Shared helpers of the checkpoint tests: a toy module with upstream key names, comparisons."""

from __future__ import annotations

import pytest
import torch
from torch import nn

HIDDEN = 8


def tiny_detector(num_classes: int = 3, num_queries: int = 4, groups: int = 2) -> nn.Module:
    """A module with upstream RF-DETR key names and toy shapes, random values, and one buffer."""
    shapes = {
        "backbone.0.encoder.encoder.embeddings.position_embeddings": (1, 5, HIDDEN),
        "transformer.decoder.layers.0.cross_attn.sampling_offsets.weight": (16, HIDDEN),
        "class_embed.weight": (num_classes + 1, HIDDEN),
        "class_embed.bias": (num_classes + 1,),
        "refpoint_embed.weight": (num_queries * groups, 4),
        "query_feat.weight": (num_queries * groups, HIDDEN),
    }
    for g in range(groups):
        shapes[f"transformer.enc_out_class_embed.{g}.weight"] = (num_classes + 1, HIDDEN)
        shapes[f"transformer.enc_out_class_embed.{g}.bias"] = (num_classes + 1,)
    root = nn.Module()
    for key, shape in shapes.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(torch.randn(shape)))
    root.backbone.register_buffer("running_stat", torch.randn(3))
    return root


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_one_line(err: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)
