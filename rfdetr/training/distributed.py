"""Multi-process training under ``torchrun``: process group, collectives, the epoch sampler.

On several nodes (a Kubeflow ``TrainJob``) torchrun reads the ``PET_*`` variables the operator
sets. Only rank 0 writes files; the others wait in :func:`broadcast` for its decisions.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from rfdetr.config import ConfigError
from rfdetr.data.loader import MIN_STEPS_PER_EPOCH

logger = logging.getLogger(__name__)

# Rank 0 evaluates and writes checkpoints while the others wait; give it time on large sets.
_PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``local_rank`` selects the GPU; ``owns_group``: our
    :func:`setup_distributed` created the process group, so :func:`cleanup` destroys it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group of the ``torchrun`` environment, if any (NCCL and this process's
    GPU with ``use_cuda``, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        nodes = os.environ.get("PET_NNODES", "1")
        if nodes != "1":  # torchrun reads PET_*; without it every node would train alone
            raise ConfigError(
                f"PET_NNODES={nodes}: started as one node of a multi-node job but not under "
                "torchrun; run the command as `torchrun --no-python rfdetr train ...`"
            )
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:  # also under a caller's group: NCCL and the CUDA RNG state use this device
        torch.cuda.set_device(local_rank)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=_PROCESS_GROUP_TIMEOUT)
    logger.info("distributed training: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank, world, local_rank, owns_group=True)


def broadcast(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every process (e.g. the early-stopping decision)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, info: DistInfo) -> list[Any]:
    """Every process's ``value``, in rank order, on every process."""
    if not info.enabled:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def cleanup(info: DistInfo, failed: bool = False) -> None:
    """Leave the process group when this module created it.

    After a ``failed`` run the other ranks may wait in a collective this one never joins, and
    destroying an NCCL group would wait for it for hours: it is aborted instead (NCCL), or left
    to the process exit (other backends).
    """
    if not info.owns_group or not dist.is_initialized():
        return
    if not failed:
        dist.destroy_process_group()
        return
    from torch.distributed import distributed_c10d

    abort = getattr(distributed_c10d, "_abort_process_group", None)
    if dist.get_backend() == "nccl" and abort is not None:
        abort()


class DistributedTrainSampler(Sampler[int]):
    """Each rank's share of an epoch's training indices; the same on every rank for an epoch.

    The distributed counterpart of :func:`rfdetr.data.make_train_sampler` (same tiny-split rule
    for ``global_batch``, images per step over all ranks). All ranks draw the same sequence from
    ``seed`` and the epoch and take every ``world_size``-th index: no overlap, equal counts.
    """

    def __init__(
        self, num_items: int, global_batch: int, rank: int, world_size: int, seed: int = 0
    ) -> None:
        self.num_items = num_items
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.epoch = 0
        wanted = global_batch * MIN_STEPS_PER_EPOCH
        self.replacement = num_items < wanted
        total = wanted if self.replacement else num_items
        self.per_rank = total // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.replacement:
            order = torch.randint(
                self.num_items, (self.per_rank * self.world_size,), generator=generator
            )
        else:
            order = torch.randperm(self.num_items, generator=generator)
        share = order[self.rank : self.per_rank * self.world_size : self.world_size]
        return iter(share.tolist())
