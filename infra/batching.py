"""Natural batching: concurrent requests for the same work are done together.

A request that finds fewer than ``max_running`` batches running starts a batch; one that
arrives while they run queues, and each batch that finishes starts the next with what
queued meanwhile (up to ``max_batch``). A batch that starts short of ``max_batch`` first
lingers ``linger_s`` for more to join: without it, callers that come back one by one would
each find a free slot and the batches would stay small. So an idle system adds only the
linger to a request, and a busy one gets large batches: per-item overhead (transactions,
round trips) shrinks as load grows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from infra.logging import get_logger

T = TypeVar("T")
R = TypeVar("R")

log = get_logger(__name__)


class Coalescer(Generic[T, R]):
    """Gathers concurrent ``submit`` calls into calls of ``run`` on lists.

    ``run`` answers one result or exception per item, in order; an exception ``run``
    itself raises is every item's answer. A batch, once started, finishes even if the
    callers waiting for it are cancelled: work that moves money is not abandoned half
    way because a client went away."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int = 100,
        max_running: int = 2,
        linger_s: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_running < 1 or linger_s < 0:
            raise ValueError("max_batch and max_running must be at least 1, linger_s >= 0")
        self._run = run
        self.max_batch = max_batch
        self.max_running = max_running
        self.linger_s = linger_s
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        # A caller that stopped waiting leaves its answer unread: read it, quietly.
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self._queue.append((item, future))
        self._start()
        # Shielded: cancelling the caller stops its wait, not the batch.
        return await asyncio.shield(future)

    def _start(self) -> None:
        while self._queue and len(self._running) < self.max_running:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            task = asyncio.create_task(self._batch(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    async def _batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if self.linger_s and len(batch) < self.max_batch:
            await asyncio.sleep(self.linger_s)
            while self._queue and len(batch) < self.max_batch:
                batch.append(self._queue.popleft())
        self.batches += 1
        self.items += len(batch)
        results: Sequence[R | Exception]
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} answers for {len(batch)} items")
        except Exception as error:
            log.exception("batch_failed", items=len(batch))
            results = [error] * len(batch)
        except BaseException as error:
            # Cancelled (shutdown): the callers must not wait for ever.
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise error
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
