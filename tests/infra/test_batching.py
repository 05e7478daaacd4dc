"""Natural batching: concurrent submissions run together, each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from infra.batching import Coalescer


class Recorder:
    def __init__(self, delay_s: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    async def run(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_s)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_a_lone_submission_runs_at_once_and_gets_its_answer() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, max_batch=10)
    assert await coalescer.submit(4) == 40
    assert recorder.batches == [[4]]


async def test_concurrent_submissions_run_in_few_batches_each_with_its_answer() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, max_batch=50, max_running=1)
    answers = await asyncio.gather(
        *(coalescer.submit(i) for i in range(0, 200, 2)), return_exceptions=False
    )
    assert answers == [i * 10 for i in range(0, 200, 2)]
    # The first runs alone; the rest queued behind it and go in full batches.
    assert [len(b) for b in recorder.batches] == [1, 50, 49]
    assert coalescer.batches == 3
    assert coalescer.items == 100


async def test_each_item_gets_its_own_error() -> None:
    coalescer = Coalescer(Recorder().run, max_batch=10)
    answers = await asyncio.gather(*(coalescer.submit(i) for i in range(4)), return_exceptions=True)
    assert answers[0] == 0
    assert answers[2] == 20
    assert isinstance(answers[1], ValueError)
    assert str(answers[1]) == "odd 1"
    assert isinstance(answers[3], ValueError)
    assert str(answers[3]) == "odd 3"


async def test_a_failing_run_fails_every_item_of_its_batch_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def run(items: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise RuntimeError("database gone")
        return list(items)

    coalescer = Coalescer(run, max_batch=3, max_running=1)
    answers = await asyncio.gather(*(coalescer.submit(i) for i in range(7)), return_exceptions=True)
    assert answers[0] == 0
    assert all(isinstance(a, RuntimeError) for a in answers[1:4])
    assert answers[4:] == [4, 5, 6]


async def test_a_run_answering_the_wrong_number_of_items_fails_them() -> None:
    async def run(items: list[int]) -> list[int | Exception]:
        answers: list[int | Exception] = [*items]
        return answers[:-1]

    coalescer = Coalescer(run, max_batch=5)
    with pytest.raises(RuntimeError, match="0 answers for 1 items"):
        await coalescer.submit(1)


async def test_a_cancelled_caller_does_not_stop_its_batch() -> None:
    finished: list[list[int]] = []

    async def run(items: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0.05)
        finished.append(list(items))
        return list(items)

    coalescer = Coalescer(run, max_batch=5)
    impatient = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    await asyncio.sleep(0.1)
    assert finished == [[1]]


async def test_lingering_lets_callers_that_come_back_one_by_one_join_a_batch() -> None:
    recorder = Recorder(delay_s=0)
    coalescer = Coalescer(recorder.run, max_batch=100, max_running=2, linger_s=0.02)

    async def trickle(i: int) -> int:
        await asyncio.sleep(i * 0.001)
        return await coalescer.submit(i * 2)

    await asyncio.gather(*(trickle(i) for i in range(10)))
    # Without lingering each of the ten would start its own batch (a slot is free).
    assert len(recorder.batches) <= 2
    assert sorted(i for b in recorder.batches for i in b) == [i * 2 for i in range(10)]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder().run, max_batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder().run, max_running=0)
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder().run, linger_s=-1)
