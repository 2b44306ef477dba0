"""`ExportModule`: the inference-time RF-DETR graph for one input size, ready to trace to ONNX.

It wraps a trained `RFDETR` (whose ``forward`` is left alone) and computes what the eager model
computes in eval mode, restricted to what inference needs: query group 0 only, no auxiliary or
two-stage training outputs, and every input-independent quantity (interpolated position
embedding, proposal boxes, learned queries, their value projections) a constant. Weight
foldings that keep the math identical up to float rounding make the graph cheaper:

- every Linear runs on 2-D rows (one ``Gemm`` with its bias) with static dims except the batch;
- attention scales, LayerScale and the deformable-attention offset scale (``1 / n_points``)
  are folded into weights; the offset and attention-weight projections are one ``Gemm``;
- the mask head's 1x1 pixel projection is folded into the query kernels (``Q x C x C`` instead
  of ``H/4 x W/4 x C x C`` multiply-adds).

Outputs (upstream's ONNX contract): ``dets`` ``[B, Q, 4]`` normalised cxcywh, ``labels``
``[B, Q, C+1]`` logits, and for Seg models ``masks`` ``[B, Q, H/4, W/4]`` logits. With a
`TopKPostProcess`, the graph takes ``orig_size`` ``[B, 2]`` (height, width) as a second input and
returns ``boxes`` ``[B, K, 4]`` pixel xyxy, ``scores`` ``[B, K]``, ``class_ids`` ``[B, K]`` int64
(and ``masks`` ``[B, K, H/4, W/4]`` logits of the kept queries) instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.export.graph_backbone import ExportProjector, ExportViT, layer_norm_rows
from rfdetr.export.graph_heads import MaskGraph, TopKPostProcess
from rfdetr.models.decoder import DecoderLayer
from rfdetr.models.detector import RFDETR
from rfdetr.models.transformer import apply_box_delta, memory_proposals


class _FoldedDecoderLayer(nn.Module):
    """One decoder layer with folded attention weights, on ``[B * Q, C]`` rows."""

    def __init__(self, layer: DecoderLayer, queries: int) -> None:
        super().__init__()
        attn, cross = layer.self_attn, layer.cross_attn
        width = attn.embed_dim
        self.heads, self.width, self.queries = attn.num_heads, width, queries
        scale = 1.0 / math.sqrt(width // attn.num_heads)
        weight, bias = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()
        sampling = cross.n_heads * cross.n_levels * cross.n_points
        with torch.no_grad():
            self.register_buffer("q_weight", weight[:width] * scale)
            self.register_buffer("q_bias", bias[:width] * scale)
            self.register_buffer("k_weight", weight[width : 2 * width].clone())
            self.register_buffer("k_bias", bias[width : 2 * width].clone())
            self.register_buffer("v_weight", weight[2 * width :].clone())
            self.register_buffer("v_bias", bias[2 * width :].clone())
            # Offsets are used as offset / n_points * wh / 2, and the sampling grid is 2 * loc - 1:
            # folding 1 / n_points here leaves grid = (2 * xy - 1) + offset' * wh.
            offsets = cross.sampling_offsets
            self.register_buffer(
                "sampling_weight",
                torch.cat([offsets.weight / cross.n_points, cross.attention_weights.weight]),
            )
            self.register_buffer(
                "sampling_bias",
                torch.cat([offsets.bias / cross.n_points, cross.attention_weights.bias]),
            )
        self.out_proj = attn.out_proj
        self.value_proj, self.output_proj = cross.value_proj, cross.output_proj
        self.norm1, self.norm2, self.norm3 = layer.norm1, layer.norm2, layer.norm3
        self.linear1, self.linear2 = layer.linear1, layer.linear2
        self.cross_heads, self.levels, self.points = cross.n_heads, cross.n_levels, cross.n_points
        self.sampling = sampling

    def _self_attention(self, tgt: Tensor, pos: Tensor) -> Tensor:
        queries, width, heads = self.queries, self.width, self.heads
        head_dim = width // heads
        q_in = tgt.reshape(-1, queries, width) + pos.reshape(-1, queries, width)
        q_in = q_in.reshape(-1, width)
        q = F.linear(q_in, self.q_weight, self.q_bias)
        q = q.reshape(-1, queries, heads, head_dim).permute(0, 2, 1, 3)
        k = F.linear(q_in, self.k_weight, self.k_bias)
        k = k.reshape(-1, queries, heads, head_dim).permute(0, 2, 1, 3)
        # In the first layer tgt is the [1, Q, C] constant: this projection folds at export.
        v = F.linear(tgt, self.v_weight, self.v_bias)
        v = v.reshape(-1, queries, heads, head_dim).permute(0, 2, 1, 3)
        attended = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        attended = self.out_proj(attended.permute(0, 2, 1, 3).reshape(-1, width))
        # tgt may be the [1, Q, C] constant of the first layer: broadcast over the batch.
        summed = tgt.reshape(-1, queries, width) + attended.reshape(-1, queries, width)
        return layer_norm_rows(summed.reshape(-1, width), self.norm1)

    def _cross_attention(
        self, query: Tensor, values: list[Tensor], grid_base: Tensor, grid_scale: Tensor
    ) -> Tensor:
        queries, width = self.queries, self.width
        heads, levels, points = self.cross_heads, self.levels, self.points
        projected = F.linear(query, self.sampling_weight, self.sampling_bias)
        offsets = projected[:, : 2 * self.sampling].reshape(-1, queries, heads, levels, points, 2)
        weights = projected[:, 2 * self.sampling :].reshape(-1, queries, heads, levels * points)
        weights = weights.softmax(-1).permute(0, 2, 1, 3).reshape(-1, 1, queries, levels * points)
        grid = (grid_base + offsets * grid_scale).permute(0, 2, 1, 3, 4, 5)
        samples = [
            F.grid_sample(
                values[level],
                grid[:, :, :, level].reshape(-1, queries, points, 2),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
            for level in range(levels)
        ]
        sampled = samples[0] if levels == 1 else torch.cat(samples, dim=-1)
        out = (sampled * weights).sum(-1).reshape(-1, width, queries).transpose(1, 2)
        return self.output_proj(out.reshape(-1, width))

    def values(self, memory: Tensor, shapes: list[tuple[int, int]]) -> list[Tensor]:
        """``[B * S, C]`` memory rows -> per level ``[B * heads, C / heads, h_l, w_l]``."""
        heads, width = self.cross_heads, self.width
        total = sum(h * w for h, w in shapes)
        value = self.value_proj(memory).reshape(-1, total, heads, width // heads)
        value = value.permute(0, 2, 3, 1).reshape(-1, width // heads, total)
        parts = value.split([h * w for h, w in shapes], dim=-1) if len(shapes) > 1 else [value]
        return [
            p.reshape(-1, width // heads, h, w) for p, (h, w) in zip(parts, shapes, strict=True)
        ]

    def forward(
        self,
        tgt: Tensor,
        pos: Tensor,
        memory: Tensor,
        grid_base: Tensor,
        grid_scale: Tensor,
        shapes: list[tuple[int, int]],
    ) -> Tensor:
        """``tgt``: ``[B * Q, C]`` (or the ``[1, Q, C]`` constant), ``pos``: ``[B * Q, C]``."""
        tgt = self._self_attention(tgt, pos)
        values = self.values(memory, shapes)
        attended = self._cross_attention(tgt + pos, values, grid_base, grid_scale)
        tgt = layer_norm_rows(tgt + attended, self.norm2)
        ffn = self.linear2(F.relu(self.linear1(tgt)))
        return layer_norm_rows(tgt + ffn, self.norm3)


def _sine_embed(boxes: Tensor, dim_t: Tensor, features: int) -> Tensor:
    """`rfdetr.models.decoder.sine_embed_boxes` with all four coordinates in one op chain.

    ``boxes`` ``[B, Q, 4]`` cxcywh -> ``[B * Q, 4 * features]`` in y, x, w, h order. ``dim_t``
    holds each frequency once (the eager table repeats each for its sin and cos entries).
    """
    coords = torch.stack([boxes[..., 1], boxes[..., 0], boxes[..., 2], boxes[..., 3]], dim=-1)
    pos = coords[..., None] * (2 * math.pi) / dim_t  # [B, Q, 4, features / 2]
    embedded = torch.stack([pos.sin(), pos.cos()], dim=-1)  # sin/cos interleaved per frequency
    return embedded.reshape(-1, 4 * features)


class ExportModule(nn.Module):
    """The inference graph of an `RFDETR` model for one input size (see the module docstring).

    Args:
        model: the trained model; only read (its ``forward`` and weights stay as they are).
        shape: input ``(height, width)``; multiples of ``patch_size * num_windows``.
        postprocess: append top-k post-processing (a second input ``orig_size``).
    """

    def __init__(
        self, model: RFDETR, shape: tuple[int, int], postprocess: TopKPostProcess | None = None
    ) -> None:
        super().__init__()
        encoder = model.backbone[0].encoder
        vit = encoder.encoder
        grid = (shape[0] // vit.patch_size, shape[1] // vit.patch_size)
        self.encoder = ExportViT(vit, shape)
        levels = _projector_levels(model)
        self.projector = ExportProjector(model.backbone[0].projector, self.encoder, levels, grid)
        self.shapes = self.projector.level_shapes
        self.grid = grid
        transformer = model.transformer
        self.queries = model.num_queries
        self.width = transformer.d_model
        self._init_two_stage(model)
        decoder = transformer.decoder
        self.layers = nn.ModuleList(
            _FoldedDecoderLayer(layer, self.queries) for layer in decoder.layers
        )
        self.ref_point_head, self.decoder_norm = decoder.ref_point_head, decoder.norm
        features = self.width // 2
        dim_t = 10000 ** (2 * (torch.arange(features, dtype=torch.float32) // 2) / features)
        self.register_buffer("dim_t", dim_t[0::2].clone(), persistent=False)
        self.class_embed, self.bbox_embed = model.class_embed, model.bbox_embed
        self.masks = MaskGraph(model, shape) if model.segmentation_head is not None else None
        self.postprocess = postprocess

    def _init_two_stage(self, model: RFDETR) -> None:
        transformer = model.transformer
        total = sum(h * w for h, w in self.shapes)
        self.top_k = min(self.queries, total)
        with torch.no_grad():
            dummy = torch.zeros(1, total, 1)
            _, proposals = memory_proposals(dummy, self.shapes)
            invalid = (proposals == 0).all(-1, keepdim=True)
            self.register_buffer("proposals", proposals[0].clone(), persistent=False)
            self.register_buffer("invalid", invalid.clone(), persistent=False)
            self.any_invalid = bool(invalid.any())
            queries = self.queries
            self.register_buffer(
                "refpoints", model.refpoint_embed.weight[:queries].detach().clone()
            )
            # [1, Q, C]: already the shape the first layer broadcasts, so no reshaped copy of it
            # lands in the file.
            query_feat = model.query_feat.weight[:queries].detach().clone()[None]
            self.register_buffer("query_feat", query_feat)
        self.enc_output = transformer.enc_output[0]
        self.enc_output_norm = transformer.enc_output_norm[0]
        self.enc_class = transformer.enc_out_class_embed[0]
        self.enc_bbox = transformer.enc_out_bbox_embed[0]
        self.total_tokens = total

    def _select(self, memory: Tensor) -> Tensor:
        """Two-stage selection for group 0: memory rows -> reference boxes ``[B, Q, 4]`` cxcywh."""
        width, total = self.width, self.total_tokens
        if self.any_invalid:
            memory = memory.reshape(-1, total, width).masked_fill(self.invalid, 0.0)
            memory = memory.reshape(-1, width)
        projected = self.enc_output_norm(self.enc_output(memory))
        scores = self.enc_class(projected).reshape(-1, total, self.enc_class.out_features)
        index = torch.topk(scores.amax(-1), self.top_k, dim=1).indices  # [B, K]
        # A flat Gather on the rows (not GatherElements on an expanded index).
        offsets = torch.arange(index.shape[0], device=index.device)[:, None] * total
        selected = projected[index + offsets]  # [B, K, C]
        delta = self.enc_bbox(selected.reshape(-1, width)).reshape(-1, self.top_k, 4)
        boxes = apply_box_delta(delta, self.proposals[index])
        reference = apply_box_delta(self.refpoints[: self.top_k], boxes)
        if self.top_k < self.queries:  # fewer tokens than queries: the rest are raw boxes
            rest = self.refpoints[self.top_k :].expand(reference.shape[0], -1, -1)
            reference = torch.cat([reference, rest], dim=1)
        return reference

    def _decode(self, memory: Tensor, reference: Tensor) -> Tensor:
        """Decoder on memory rows; returns the final normalised query rows ``[B * Q, C]``."""
        pos = self.ref_point_head(_sine_embed(reference, self.dim_t, self.width // 2))
        grid_base = (2 * reference[..., :2] - 1)[:, :, None, None, None, :]
        grid_scale = reference[..., 2:][:, :, None, None, None, :]
        tgt = self.query_feat  # [1, Q, C]: broadcast over the batch by the first layer
        for layer in self.layers:
            tgt = layer(tgt, pos, memory, grid_base, grid_scale, self.shapes)
        return self.decoder_norm(tgt)

    def forward(self, images: Tensor, orig_size: Tensor | None = None) -> tuple[Tensor, ...]:
        """``images`` ``[B, 3, H, W]`` normalised -> ``(dets, labels[, masks])``.

        With post-processing, ``(boxes, scores, class_ids[, masks])`` (see the module docstring).
        """
        levels = self.projector(self.encoder(images))
        memory = levels[0] if len(levels) == 1 else _concat_levels(levels, self.shapes, self.width)
        reference = self._select(memory)
        hs = self._decode(memory, reference)
        labels = self.class_embed(hs).reshape(-1, self.queries, self.class_embed.out_features)
        dets = apply_box_delta(self.bbox_embed(hs).reshape(-1, self.queries, 4), reference)
        masks = None
        if self.masks is not None:
            masks = self.masks(levels[0], self.shapes[0], hs, self.queries)
        if self.postprocess is not None:
            if orig_size is None:
                raise ValueError("the post-processing graph needs orig_size [B, 2]")
            return self.postprocess(dets, labels, masks, orig_size)
        return (dets, labels) if masks is None else (dets, labels, masks)

    @property
    def input_names(self) -> list[str]:
        """ONNX input names."""
        return ["input", "orig_size"] if self.postprocess is not None else ["input"]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Shape of each output without the batch axis, in `output_names` order."""
        mask = [(self.masks.size[0], self.masks.size[1])] if self.masks is not None else []
        if self.postprocess is not None:
            k = self.postprocess.k
            return [(k, 4), (k,), (k,)] + [(k, *m) for m in mask]
        return [(self.queries, 4), (self.queries, self.class_embed.out_features)] + [
            (self.queries, *m) for m in mask
        ]

    @property
    def output_names(self) -> list[str]:
        """ONNX output names, in the order `forward` returns them."""
        names = (
            ["boxes", "scores", "class_ids"] if self.postprocess is not None else ["dets", "labels"]
        )
        return names + (["masks"] if self.masks is not None else [])


def _projector_levels(model: RFDETR) -> list[str]:
    """The projector's level names, recovered from its resamplers (P4: identity)."""
    levels = []
    for samplers in model.backbone[0].projector.stages_sampling:
        first = samplers[0]
        if len(first) == 0:
            levels.append("P4")
        elif isinstance(first[0], nn.ConvTranspose2d):
            levels.append("P3")
        else:
            levels.append("P5")
    return levels


def _concat_levels(levels: list[Tensor], shapes: list[tuple[int, int]], width: int) -> Tensor:
    """Per-level rows -> one ``[B * S, C]`` memory, levels concatenated per image."""
    per_image = [
        rows.reshape(-1, h * w, width) for rows, (h, w) in zip(levels, shapes, strict=True)
    ]
    return torch.cat(per_image, dim=1).reshape(-1, width)
