"""Adaptive micro-batching: concurrent single-ride requests share one model call.

Callers await :meth:`AdaptiveBatcher.predict` with one item and get one result; they never know
they were batched. A batch is sent when it holds ``max_batch_size`` items, or ``max_batch_time``
seconds after its first item arrived. With ``max_batch_time=0`` (the default) a batch holds the
requests whose handlers ran in the same event-loop turn: under load that is dozens, on an idle
server it is one, and nobody waits for a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class AdaptiveBatcher(Generic[Item, Result]):
    """Coalesce concurrent :meth:`predict` calls into calls of ``predict_batch(items)``.

    ``predict_batch`` runs on the event loop and must return one result per item, in order. If
    it raises, every caller of that batch gets the exception. ``enabled=False`` calls it with
    each item alone.
    """

    def __init__(
        self,
        predict_batch: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_batch_size: int = 256,
        max_batch_time: float = 0.0,
        enabled: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_batch_time < 0:
            raise ValueError("max_batch_time must be >= 0 seconds")
        self._predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self.enabled = enabled and max_batch_size > 1
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Result]] = []
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self.batches = 0  # model calls made: callers / batches is the achieved batch size

    async def predict(self, item: Item) -> Result:
        if not self.enabled:
            self.batches += 1
            return self._predict_batch((item,))[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self.max_batch_size:
            self._flush()
        elif self._handle is None:
            if self.max_batch_time > 0:
                self._handle = loop.call_later(self.max_batch_time, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        items, futures = self._items, self._futures
        if not items:
            return
        self._items, self._futures = [], []
        self.batches += 1
        try:
            results = self._predict_batch(items)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():  # the caller may have gone (client disconnect, cancel)
                future.set_result(result)
