"""The intra-op thread count of loading work in the main process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run loading work (items, collation, CPU normalisation) on one intra-op thread, as
    DataLoader workers do.

    In the main process (``num_workers=0``) a second OpenMP thread gains little on one image,
    and when another process holds the other core its threads spin-wait on each other: item
    loading measured 4-6x slower then (issue 17) unless ``OMP_WAIT_POLICY=PASSIVE`` was set.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
