"""The batched two-stage selection used in training equals the per-group computation."""

from __future__ import annotations

import torch

from rfdetr.config import get_preset
from rfdetr.models.build import build_model
from rfdetr.models.transformer import apply_box_delta, memory_proposals


def _per_group(transformer: torch.nn.Module, memory: torch.Tensor, shapes: list, groups: int):
    memory, proposals = memory_proposals(memory, shapes)
    top_k = min(transformer.num_queries, memory.shape[1])
    features, boxes, logits = [], [], []
    for g in range(groups):
        projected = transformer.enc_output_norm[g](transformer.enc_output[g](memory))
        token_logits = transformer.enc_out_class_embed[g](projected)
        index = torch.topk(token_logits.max(-1).values, top_k, dim=1).indices[..., None]
        selected = torch.gather(projected, 1, index.expand(-1, -1, projected.shape[-1]))
        anchors = torch.gather(proposals, 1, index.expand(-1, -1, 4))
        features.append(selected)
        boxes.append(apply_box_delta(transformer.enc_out_bbox_embed[g](selected), anchors))
        logits.append(torch.gather(token_logits, 1, index.expand(-1, -1, token_logits.shape[-1])))
    return torch.cat(features, 1), torch.cat(boxes, 1), torch.cat(logits, 1)


def test_training_batched_two_stage_heads_match_the_group_loop() -> None:
    config = get_preset("tiny").with_overrides(group_detr=5, num_queries=6)
    transformer = build_model(config).train().transformer
    with torch.no_grad():  # distinct weights per group, so a mixed-up group would show
        for parameter in transformer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    memory = torch.randn(3, 16, config.hidden_dim, requires_grad=True)
    batched = transformer.select_queries(memory, [(4, 4)], groups=5)
    looped = _per_group(transformer, memory, [(4, 4)], groups=5)
    for ours, reference in zip(batched, looped, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    grad_batched = torch.autograd.grad(sum(t.square().sum() for t in batched), memory)[0]
    grad_looped = torch.autograd.grad(sum(t.square().sum() for t in looped), memory)[0]
    torch.testing.assert_close(grad_batched, grad_looped, rtol=1e-4, atol=1e-5)
