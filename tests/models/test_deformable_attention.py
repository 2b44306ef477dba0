"""Deformable attention equals a slow point-by-point reference and passes gradients."""

from __future__ import annotations

import torch

from rfdetr.models.deformable_attention import MSDeformAttn, ms_deform_attn


def bilinear_zero_padded(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample ``value`` [D, h, w] at normalised (x, y) the way grid_sample does
    (align_corners=False, zeros outside), one corner at a time."""
    _, h, w = value.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(value.shape[0], dtype=value.dtype)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            out += weight * value[:, yi, xi]
    return out


def reference_loop(value, shapes, locations, weights):
    batch, _, heads, head_dim = value.shape
    _, queries, _, _, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads, head_dim)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    level_value = value[b, starts[lvl] : starts[lvl + 1], m].T.reshape(
                        head_dim, h, w
                    )
                    for p in range(points):
                        x, y = locations[b, q, m, lvl, p].tolist()
                        sample = bilinear_zero_padded(level_value, x, y)
                        out[b, q, m] += weights[b, q, m, lvl, p] * sample
    return out.reshape(batch, queries, heads * head_dim)


def test_matches_slow_reference_on_two_levels() -> None:
    shapes = [(4, 5), (2, 3)]
    batch, heads, head_dim, queries, points = 2, 2, 3, 4, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, head_dim)
    # Some locations fall outside [0, 1] to exercise zero padding.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, len(shapes), points)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    fast = ms_deform_attn(value, shapes, locations, weights)
    slow = reference_loop(value, shapes, locations, weights)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_module_gradients_reach_every_parameter_and_input() -> None:
    attn = MSDeformAttn(d_model=16, n_levels=1, n_heads=4, n_points=2)
    for p in attn.parameters():  # leave the zero init so every weight influences the output
        torch.nn.init.normal_(p, std=0.1)
    query = torch.randn(2, 5, 16, requires_grad=True)
    memory = torch.randn(2, 6 * 6, 16, requires_grad=True)
    boxes = torch.rand(2, 5, 1, 4) * 0.5 + 0.25
    out = attn(query, boxes, memory, [(6, 6)])
    assert out.shape == (2, 5, 16)
    out.square().sum().backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert memory.grad is not None and memory.grad.abs().sum() > 0
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initial_offsets_form_rings_around_the_reference() -> None:
    attn = MSDeformAttn(d_model=16, n_levels=1, n_heads=4, n_points=2)
    rings = attn.sampling_offsets.bias.view(4, 1, 2, 2)
    # Point p of every head lies p+1 units from the centre along the head's direction.
    assert torch.allclose(rings[:, 0, 1].abs().max(-1).values, torch.full((4,), 2.0))
    assert torch.allclose(rings[:, 0, 0].abs().max(-1).values, torch.ones(4))
