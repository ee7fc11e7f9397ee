"""Adaptive micro-batching: concurrent single-ride requests share one model call.

Callers await :meth:`AdaptiveBatcher.predict` with one item and get one result; they never know
they were batched. A batch is sent when it holds ``max_batch_size`` items, or ``max_batch_time``
seconds after its first item arrived. With ``max_batch_time=0`` (the default) a batch holds the
requests whose handlers ran in the same event-loop turn: under load that is dozens, on an idle
server it is one, and nobody waits for a timer.

A model that answers one ride inline (a linear model's table lookup) skips the wait:
:class:`AnswerRecorder` batches only what follows its answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger("ridecast.web")


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


class AnswerRecorder(Generic[Item, Result]):
    """The bookkeeping half of a micro-batch, for a model that answers each ride inline.

    A linear model's answer is a table lookup, cheaper than the future a caller would wait on,
    so such requests are answered at once and only what follows an answer (the prediction log,
    metrics, the shadow copy) is batched: :meth:`add` keeps the item and its answer, and the
    items of one event-loop turn (or ``max_batch_size`` of them) reach ``record_batch(items,
    answers)`` in one call. Nobody waits on it; a failure there is logged, never raised.
    """

    def __init__(
        self,
        record_batch: Callable[[Sequence[Item], Sequence[Result]], None],
        *,
        max_batch_size: int = 256,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._record_batch = record_batch
        self.max_batch_size = max_batch_size
        self._items: list[Item] = []
        self._answers: list[Result] = []
        self._handle: asyncio.Handle | None = None
        self.batches = 0  # record_batch calls

    def add(self, item: Item, answer: Result) -> None:
        self._items.append(item)
        self._answers.append(answer)
        if len(self._items) >= self.max_batch_size:
            self.flush()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand over what is kept now (also at shutdown, before the log closes)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        items, answers = self._items, self._answers
        if not items:
            return
        self._items, self._answers = [], []
        self.batches += 1
        try:
            self._record_batch(items, answers)
        except Exception:
            log.exception("recording %d answered requests failed", len(items))
