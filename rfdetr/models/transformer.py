"""Two-stage query selection feeding the decoder (there is no transformer encoder).

Every memory token proposes a fixed box (its cell centre, side 0.05 * 2^level). For each query
group a Linear+LayerNorm and class/box heads score the tokens; the top ``num_queries`` tokens
give the group's reference boxes (detached) and their encoder-side predictions (for the
``*_enc`` losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.models.decoder import Decoder
from rfdetr.models.layers import MLP


def apply_box_delta(delta: Tensor, reference: Tensor) -> Tensor:
    """``[..., 4]`` normalised cxcywh ``reference`` boxes (broadcastable) updated by the raw head
    output ``delta`` ``[..., 4]``: ``cxcy = d_xy * wh_ref + cxcy_ref``, ``wh = exp(d_wh) * wh_ref``.
    """
    cxcy = delta[..., :2] * reference[..., 2:] + reference[..., :2]
    wh = delta[..., 2:].exp() * reference[..., 2:]
    return torch.cat([cxcy, wh], dim=-1)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, k]]``: ``[B, S, D]`` rows picked by ``[B, K]`` -> ``[B, K, D]``, as one
    plain ONNX ``Gather`` on the flattened rows."""
    offsets = torch.arange(x.shape[0], device=index.device)[:, None] * x.shape[1]
    return x.flatten(0, 1)[index + offsets]


def memory_proposals(
    memory: Tensor, spatial_shapes: list[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """Fixed proposal boxes for every token of ``memory`` ``[B, S, C]`` (the levels of
    ``spatial_shapes`` ``(h_l, w_l)``, flattened): ``(memory, proposals)``, ``[B, S, C]`` and
    ``[B, S, 4]`` normalised cxcywh, both zeroed for tokens too near the border."""
    batch = memory.shape[0]
    fp32 = {"dtype": torch.float32, "device": memory.device}
    proposals = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(torch.arange(h, **fp32), torch.arange(w, **fp32), indexing="ij")
        centres = (torch.stack([xs, ys], -1) + 0.5) / torch.tensor([w, h], **fp32)
        sizes = torch.full_like(centres, 0.05 * 2.0**level)
        proposals.append(torch.cat([centres, sizes], -1).reshape(1, h * w, 4))
    boxes = torch.cat(proposals, dim=1).expand(batch, -1, -1)
    valid = ((boxes > 0.01) & (boxes < 0.99)).all(-1, keepdim=True)
    boxes = boxes.masked_fill(~valid, 0.0).to(memory.dtype)
    return memory.masked_fill(~valid, 0.0), boxes


class Transformer(nn.Module):
    """Two-stage selection + ``decoder``: one set of two-stage heads (``num_classes + 1``
    logits) for each of the ``group_detr`` training query groups of ``num_queries``."""

    def __init__(
        self, decoder: Decoder, d_model: int, num_queries: int, group_detr: int, num_classes: int
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.enc_output = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(group_detr))
        self.enc_output_norm = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(group_detr))
        self.enc_out_class_embed = nn.ModuleList(
            nn.Linear(d_model, num_classes + 1) for _ in range(group_detr)
        )
        self.enc_out_bbox_embed = nn.ModuleList(
            MLP(d_model, d_model, 4, 3) for _ in range(group_detr)
        )
        self.d_model = d_model
        self.num_queries = num_queries

    def select_queries(
        self, memory: Tensor, spatial_shapes: list[tuple[int, int]], groups: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k two-stage selection for the first ``groups`` groups.

        Returns:
            ``(features, boxes, logits)`` of the selected tokens, groups concatenated along the
            query axis: ``[B, G*K, C]`` (after the group's LayerNorm), ``[B, G*K, 4]``
            normalised cxcywh (differentiable), ``[B, G*K, num_classes + 1]``.
        """
        memory, proposals = memory_proposals(memory, spatial_shapes)
        top_k = min(self.num_queries, memory.shape[1])
        if groups > 1:
            return self._select_batched(memory, proposals, groups, top_k)
        projected = self.enc_output_norm[0](self.enc_output[0](memory))  # one group: inference
        token_logits = self.enc_out_class_embed[0](projected)
        index = torch.topk(token_logits.max(-1).values, top_k, dim=1).indices
        selected = gather_rows(projected, index)
        boxes = apply_box_delta(self.enc_out_bbox_embed[0](selected), gather_rows(proposals, index))
        return selected, boxes, gather_rows(token_logits, index)

    def _select_batched(
        self, memory: Tensor, proposals: Tensor, groups: int, top_k: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`select_queries` for several groups (training), as batched group products."""
        batch, tokens, width = memory.shape
        g = range(groups)
        flat = memory.reshape(1, batch * tokens, width).expand(groups, -1, -1)
        projected = _group_linear(flat, [self.enc_output[i] for i in g])
        norms = [self.enc_output_norm[i] for i in g]
        projected = F.layer_norm(projected, (width,), eps=norms[0].eps)
        projected = projected * torch.stack([n.weight for n in norms])[:, None]
        projected = projected + torch.stack([n.bias for n in norms])[:, None]
        token_logits = _group_linear(projected, [self.enc_out_class_embed[i] for i in g])
        projected = projected.view(groups, batch, tokens, width)
        token_logits = token_logits.view(groups, batch, tokens, -1)
        index = torch.topk(token_logits.max(-1).values, top_k, dim=2).indices[..., None]
        selected = torch.gather(projected, 2, index.expand(-1, -1, -1, width))
        anchors = torch.gather(
            proposals.unsqueeze(0).expand(groups, -1, -1, -1), 2, index.expand(-1, -1, -1, 4)
        )
        logits = torch.gather(token_logits, 2, index.expand(-1, -1, -1, token_logits.shape[-1]))
        hidden = selected.reshape(groups, batch * top_k, width)
        mlps = [self.enc_out_bbox_embed[i] for i in g]
        for layer in range(len(mlps[0].layers)):
            hidden = _group_linear(hidden, [mlp.layers[layer] for mlp in mlps])
            if layer < len(mlps[0].layers) - 1:
                hidden = F.relu(hidden)
        boxes = apply_box_delta(hidden.view(groups, batch, top_k, 4), anchors)

        def by_image(t: Tensor) -> Tensor:  # [G, B, K, D] -> [B, G*K, D], group-major queries
            return t.permute(1, 0, 2, 3).reshape(batch, groups * top_k, t.shape[-1])

        return by_image(selected), by_image(boxes), by_image(logits)

    def forward(
        self,
        features: list[Tensor],
        refpoint_embed: Tensor,
        query_feat: Tensor,
        all_layers: bool = True,
    ) -> dict[str, Tensor]:
        """Select queries and decode them.

        Args:
            features: projector maps ``[B, C, h_l, w_l]``.
            refpoint_embed: ``[G*Q, 4]`` learned deltas on the selected boxes.
            query_feat: ``[G*Q, C]`` learned content queries.
            all_layers: return every decoder layer (training) or the last only.

        Returns:
            ``hs`` ``[L, B, G*Q, C]``, ``reference`` ``[B, G*Q, 4]`` (cxcywh), and the encoder
            side ``enc_hs`` ``[B, G*K, C]``, ``enc_boxes`` ``[B, G*K, 4]``, ``enc_logits``.
        """
        # Python ints even while tracing: export fixes the size, so proposals become constants.
        spatial_shapes = [(int(f.shape[2]), int(f.shape[3])) for f in features]
        memory = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)
        groups = query_feat.shape[0] // self.num_queries
        enc_hs, enc_boxes, enc_logits = self.select_queries(memory, spatial_shapes, groups)
        batch = memory.shape[0]
        refpoints = refpoint_embed.unsqueeze(0).expand(batch, -1, -1)
        selected = enc_boxes.shape[1]
        # With fewer tokens than queries the remaining rows are raw boxes, as upstream.
        reference = apply_box_delta(refpoints[:, :selected], enc_boxes.detach())
        if selected < refpoints.shape[1]:
            reference = torch.cat([reference, refpoints[:, selected:]], dim=1)
        tgt = query_feat.unsqueeze(0).expand(batch, -1, -1)
        hs = self.decoder(tgt, memory, reference, spatial_shapes, all_layers=all_layers)
        return {
            "hs": hs,
            "reference": reference,
            "enc_hs": enc_hs,
            "enc_boxes": enc_boxes,
            "enc_logits": enc_logits,
        }


def _group_linear(x: Tensor, layers: list[nn.Linear]) -> Tensor:
    """``layers[g](x[g])`` for every group: ``[G, N, in]`` -> ``[G, N, out]``."""
    weight = torch.stack([layer.weight for layer in layers])  # [G, out, in]
    bias = torch.stack([layer.bias for layer in layers])  # [G, out]
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
