"""Group-DETR self-attention: in training, queries attend only within their group.

Upstream rfdetr 1.11.2 (``rfdetr/models/transformer.py``, ``TransformerDecoderLayer.forward_post``)
splits the ``group_detr`` query groups into the batch before self-attention and back after, so
a training forward over ``G`` groups equals ``G`` independent forwards over one group each.
"""

from __future__ import annotations

import torch

from rfdetr.models.decoder import DecoderLayer

GROUPS, PER_GROUP, BATCH, WIDTH = 3, 5, 2, 32


def _layer(groups: int) -> DecoderLayer:
    torch.manual_seed(0)
    return DecoderLayer(
        WIDTH, sa_nheads=4, ca_nheads=4, dim_feedforward=64, n_levels=1, n_points=2,
        group_detr=groups,
    ).train()  # fmt: skip


def test_decoder_groups_attend_within_their_group_only() -> None:
    torch.manual_seed(1)
    queries = GROUPS * PER_GROUP
    tgt, pos = torch.randn(BATCH, queries, WIDTH), torch.randn(BATCH, queries, WIDTH)
    boxes = torch.rand(BATCH, queries, 1, 4) * 0.5 + 0.25
    memory, shapes = torch.randn(BATCH, 6 * 6, WIDTH), [(6, 6)]
    grouped = _layer(GROUPS)
    together = grouped(tgt, pos, boxes, memory, shapes)
    single = _layer(1)
    single.load_state_dict(grouped.state_dict())
    parts = []
    for g in range(GROUPS):
        part = slice(g * PER_GROUP, (g + 1) * PER_GROUP)
        parts.append(single(tgt[:, part], pos[:, part], boxes[:, part], memory, shapes))
    torch.testing.assert_close(together, torch.cat(parts, dim=1), rtol=0, atol=1e-6)
    crossed = _layer(1)  # without groups the queries see each other: the outputs differ
    crossed.load_state_dict(grouped.state_dict())
    assert not torch.allclose(crossed(tgt, pos, boxes, memory, shapes), together, atol=1e-3)
