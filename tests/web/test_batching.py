"""The adaptive micro-batcher: callers get their own result, model calls are shared."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ridecast.web.batching import AdaptiveBatcher, AnswerRecorder


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


class Ledger:
    """Records what an AnswerRecorder hands over."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[tuple[int, float]]] = []
        self.fail = fail

    def __call__(self, items: Sequence[int], answers: Sequence[float]) -> None:
        self.calls.append(list(zip(items, answers, strict=True)))
        if self.fail:
            raise RuntimeError("the log is gone")


def test_answers_of_one_loop_turn_are_recorded_together_after_the_turn() -> None:
    ledger = Ledger()
    recorder: AnswerRecorder[int, float] = AnswerRecorder(ledger, max_batch_size=4)

    async def turn() -> list[list[tuple[int, float]]]:
        for i in range(10):
            recorder.add(i, i / 2)
        seen_in_the_turn = [list(c) for c in ledger.calls]
        await asyncio.sleep(0)  # the next turn: the rest is handed over
        return seen_in_the_turn

    in_turn = asyncio.run(turn())
    # Full batches go at once; the remainder waits for the end of the turn, never longer.
    assert [len(c) for c in in_turn] == [4, 4]
    assert [len(c) for c in ledger.calls] == [4, 4, 2]
    assert [item for c in ledger.calls for item, _ in c] == list(range(10))
    assert recorder.batches == 3


def test_a_failing_record_is_logged_not_raised_and_flush_hands_over_what_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger(fail=True)
    recorder: AnswerRecorder[int, float] = AnswerRecorder(ledger)

    async def run() -> None:
        recorder.add(1, 0.5)
        await asyncio.sleep(0)
        recorder.add(2, 1.0)
        recorder.flush()  # as at shutdown: before the turn ends
        await asyncio.sleep(0)

    asyncio.run(run())
    assert ledger.calls == [[(1, 0.5)], [(2, 1.0)]]
    assert "recording 1 answered requests failed" in caplog.text
    with pytest.raises(ValueError):
        AnswerRecorder(ledger, max_batch_size=0)
