"""Micro-batching: requests that arrive together share one forward pass.

Each request ``submit``s one image with a *key* (the operation and the parameters that change the
forward pass, e.g. ``('colorize', 0.38, 128)``). One worker task takes the first waiting image, then keeps
gathering for at most ``max_wait_s`` or until ``max_batch`` images are in hand, groups them by key and
runs each group as one call of ``run_batch`` on a single background thread, so the event loop keeps
accepting requests while the model works. Whatever arrives during that call waits in the queue and forms
the next batch: the busier the service, the bigger the batches, and throughput grows with concurrency
instead of serialising on the model.

The queue is bounded: ``submit`` raises ``QueueFull`` at once when ``max_queue`` images are waiting, so an
overloaded service answers 503 quickly instead of letting latency grow without bound. A request that
gives up (timeout, client gone) is dropped before its batch runs.

If a batch call raises, its images are retried one by one, so one bad image fails only its own request.
"""
import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ['BatchResult', 'MicroBatcher', 'QueueFull']


class QueueFull(Exception):
    """More images are waiting than the batcher's ``max_queue``."""


@dataclass
class BatchResult:
    """One image's result and the size of the forward pass it shared (reported to the client)."""
    value: Any
    batch_size: int


@dataclass
class _Pending:
    key: Hashable
    item: Any
    future: asyncio.Future


RunBatch = Callable[[Hashable, Sequence[Any]], list[Any]]


class MicroBatcher:
    """Gather concurrent ``submit`` calls into batched ``run_batch(key, items) -> results`` calls.

    Args:
        run_batch: called on the worker thread with one key and a list of items; returns one result per
            item, in order. It may raise: the items are then retried one at a time.
        max_batch: most items in one gathering round (one forward pass per key within it).
        max_wait_s: longest the first item of a round waits for company.
        max_queue: most items waiting; beyond it ``submit`` raises ``QueueFull``.
    """

    def __init__(self, run_batch: RunBatch, max_batch: int = 32, max_wait_s: float = 0.01,
                 max_queue: int = 256) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue = asyncio.Queue()
        # One thread: the model is not shared between concurrent calls, and torch parallelises inside.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix='splitbrain-batch')
        self._worker: asyncio.Task = None
        self.batches_run = 0

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name='splitbrain-batcher')

    async def stop(self) -> None:
        """Stop gathering; a batch that is running finishes first. Waiting requests are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, key: Hashable, item: Any) -> BatchResult:
        """Queue one item and wait for its result; raises what ``run_batch`` raised for it alone."""
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f'{self._queue.qsize()} images waiting, limit {self.max_queue}')
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(key, item, future))
        return await future

    async def _gather_round(self) -> list[_Pending]:
        first = await self._queue.get()
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return [p for p in batch if not p.future.done()]  # done = the requester gave up

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            groups: dict[Hashable, list[_Pending]] = {}
            for pending in await self._gather_round():
                groups.setdefault(pending.key, []).append(pending)
            for key, group in groups.items():
                outcomes, batch_size = await loop.run_in_executor(
                    self._executor, self._run_group, key, [p.item for p in group])
                self.batches_run += 1
                for pending, (ok, value) in zip(group, outcomes):
                    if pending.future.done():
                        continue
                    if ok:
                        pending.future.set_result(BatchResult(value, batch_size))
                    else:
                        pending.future.set_exception(value)

    def _run_group(self, key: Hashable, items: list[Any]) -> tuple[list[tuple[bool, Any]], int]:
        """On the worker thread: the whole group in one call, or one by one if that fails.

        Returns (ok, result or exception) per item, and how many items shared each call.
        """
        try:
            return [(True, r) for r in self.run_batch(key, items)], len(items)
        except Exception as e:
            if len(items) == 1:
                return [(False, e)], 1
        outcomes = []
        for item in items:
            try:
                outcomes.append((True, self.run_batch(key, [item])[0]))
            except Exception as e:
                outcomes.append((False, e))
        return outcomes, 1
