"""The adaptive micro-batcher: callers get their own result, model calls are shared."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ridecast.web.batching import AdaptiveBatcher


class Doubler:
    """Records the batches it is called with."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * i for i in items]


async def _gather(batcher: AdaptiveBatcher[int, int], items: list[int]) -> list[int]:
    return list(await asyncio.gather(*(batcher.predict(i) for i in items)))


def test_concurrent_callers_share_one_call_and_get_their_own_results() -> None:
    model = Doubler()
    batcher = AdaptiveBatcher(model, max_batch_size=256)
    assert asyncio.run(_gather(batcher, list(range(100)))) == [2 * i for i in range(100)]
    assert model.calls == [list(range(100))]


def test_max_batch_size_splits_batches_in_order() -> None:
    model = Doubler()
    batcher = AdaptiveBatcher(model, max_batch_size=8)
    assert asyncio.run(_gather(batcher, list(range(20)))) == [2 * i for i in range(20)]
    assert [len(c) for c in model.calls] == [8, 8, 4]
    assert [i for c in model.calls for i in c] == list(range(20))


def test_a_lone_caller_is_not_delayed_and_off_means_one_call_each() -> None:
    model = Doubler()
    batcher = AdaptiveBatcher(model)

    async def sequential() -> list[int]:
        return [await batcher.predict(i) for i in range(5)]

    assert asyncio.run(sequential()) == [0, 2, 4, 6, 8]
    assert len(model.calls) == 5
    off = Doubler()
    assert asyncio.run(_gather(AdaptiveBatcher(off, enabled=False), [1, 2, 3])) == [2, 4, 6]
    assert off.calls == [[1], [2], [3]]


def test_max_batch_time_collects_callers_that_arrive_later() -> None:
    model = Doubler()
    batcher = AdaptiveBatcher(model, max_batch_time=0.05)

    async def staggered() -> list[int]:
        async def late(i: int) -> int:
            await asyncio.sleep(0.01 * i)
            return await batcher.predict(i)

        return list(await asyncio.gather(*(late(i) for i in range(3))))

    assert asyncio.run(staggered()) == [0, 2, 4]
    assert model.calls == [[0, 1, 2]]


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works() -> None:
    model = Doubler(fail_on=3)
    batcher = AdaptiveBatcher(model)

    async def scenario() -> tuple[list[object], int]:
        results = await asyncio.gather(
            *(batcher.predict(i) for i in range(5)), return_exceptions=True
        )
        return list(results), await batcher.predict(7)

    results, after = asyncio.run(scenario())
    assert all(isinstance(r, ValueError) for r in results) and after == 14


def test_knobs_are_checked() -> None:
    with pytest.raises(ValueError):
        AdaptiveBatcher(Doubler(), max_batch_size=0)
    with pytest.raises(ValueError):
        AdaptiveBatcher(Doubler(), max_batch_time=-1)
