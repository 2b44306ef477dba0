"""Two-stage query selection during verification: compare like with like at near-ties.

The two-stage top-k over encoder tokens decides which learned query each token gets; tokens
closer than the ONNX Runtime / PyTorch float noise (~1e-5; about half of random-weight inputs)
may come out in either order, with different, equally valid outputs. So verification reads ONNX
Runtime's selection (the first ``TopK`` node's indices), checks it is a top-k of PyTorch's own
logits within a tolerance, and runs PyTorch with it (a hook on the group-0 selection head).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from rfdetr.models.detector import RFDETR


@dataclass
class SelectionCheck:
    """What the forced selection found for one batch.

    Attributes:
        forced: the hook ran (False if the model no longer calls that head module).
        reordered: ranks where ONNX Runtime's order differs from PyTorch's own top-k.
        violations: ranks where that order contradicts PyTorch's logits beyond the tolerance.
        worst_gap: largest such contradiction (logit units).
    """

    forced: bool = False
    reordered: int = 0
    violations: int = 0
    worst_gap: float = 0.0


def selection_output(path: str | os.PathLike[str]) -> tuple[bytes, str] | None:
    """``path`` serialised with the two-stage top-k indices as an extra output, and that
    output's name; None when the graph has no ``TopK`` node."""
    import onnx

    proto = onnx.load(str(path))
    topk = next((node for node in proto.graph.node if node.op_type == "TopK"), None)
    if topk is None:
        return None
    name = topk.output[1]
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None)
    )
    return proto.SerializeToString(), name


@contextmanager
def forced_selection(
    model: RFDETR, index: Tensor, tolerance: float, check: SelectionCheck | None = None
) -> Iterator[SelectionCheck]:
    """Make ``model``'s two-stage top-k return ``index`` ``[B, K]`` (in that order); each pick must
    score, up to ``tolerance``, at least as high as the next one and every token left out. The
    findings are added to ``check`` (default: a new one), which is yielded."""
    head = model.transformer.enc_out_class_embed[0]
    check = SelectionCheck() if check is None else check

    def hook(module: torch.nn.Module, args: tuple, output: Tensor) -> Tensor:
        check.forced = True
        scores = output.amax(-1)  # [B, S]
        picked = scores.gather(1, index)  # [B, K] in ONNX Runtime's order
        own = torch.topk(scores, index.shape[1], dim=1).indices
        check.reordered += int((own != index).sum())
        later_higher = (picked[:, 1:] - picked[:, :-1]).clamp(min=0).flatten()
        left_out = scores.scatter(1, index, float("-inf")).amax(1)  # best token not selected
        excess = torch.cat([later_higher, (left_out - picked.amin(1)).clamp(min=0)])
        check.violations += int((excess > tolerance).sum())
        if excess.numel():
            check.worst_gap = max(check.worst_gap, float(excess.max()))
        batch, _, columns = output.shape
        ranks = torch.arange(index.shape[1], 0, -1, dtype=output.dtype, device=output.device)
        forced = output.new_full(output.shape, -1e9)
        values = ranks[None, :, None].expand(batch, -1, columns)
        return forced.scatter(1, index[..., None].expand(-1, -1, columns), values)

    handle = head.register_forward_hook(hook)
    try:
        yield check
    finally:
        handle.remove()
