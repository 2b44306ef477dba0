"""Dynamic batching: concurrent requests share one runtime call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

logger = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
_Item = tuple[torch.Tensor, "asyncio.Future[dict[str, torch.Tensor]]"]


class MicroBatcher:
    """Batch concurrent ``submit`` calls for ``forward`` (``[B, 3, H, W]`` -> ``{name: [B, ...]}``).

    One worker task takes the first waiting request, collects more for at most ``max_latency_s``
    or until ``max_batch`` images, runs ``forward`` once on the concatenation in a thread (the
    event loop keeps answering) and hands each request its rows. A request larger than
    ``max_batch`` runs alone; ``on_batch`` gets the image count of every call (metrics).
    """

    def __init__(
        self,
        forward: Forward,
        max_batch: int = 8,
        max_latency_s: float = 0.005,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.forward = forward
        self.max_batch = max_batch
        self.max_latency_s = max_latency_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rfdetr-runtime")

    async def submit(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``batch`` ``[b, 3, H, W]``, possibly together with other requests; its outputs."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(self._queue))
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        await self._queue.put((batch, future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        loop = asyncio.get_running_loop()
        pending: _Item | None = None  # a request that did not fit the last batch
        while True:
            items = [pending if pending is not None else await queue.get()]
            pending, size = None, len(items[0][0])
            deadline = loop.time() + self.max_latency_s
            while size < self.max_batch:
                left = deadline - loop.time()
                try:
                    if left > 0:
                        item = await asyncio.wait_for(queue.get(), timeout=left)
                    else:
                        item = queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(item[0]) > self.max_batch:
                    pending = item
                    break
                items.append(item)
                size += len(item[0])
            await self._execute([item for item in items if not item[1].cancelled()])

    async def _execute(self, items: list[_Item]) -> None:
        if not items:
            return
        joined = torch.cat([batch for batch, _ in items]) if len(items) > 1 else items[0][0]
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.forward, joined
            )
        except Exception as error:  # the runtime failed: every waiting request hears why
            logger.exception("runtime call failed for a batch of %d request(s)", len(items))
            for _, future in items:
                if not future.done():
                    future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(joined))
        start = 0
        for batch, future in items:
            rows = slice(start, start + len(batch))
            start += len(batch)
            if not future.done():
                future.set_result({name: value[rows] for name, value in outputs.items()})
