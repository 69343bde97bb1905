"""Group commit (api/coalesce.py): concurrent submissions share calls, each gets its own
results back, a lone one waits for nobody."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstream.api.coalesce import Coalescer


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_on = fail_on

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        await asyncio.sleep(0.001)  # a store transaction: others arrive meanwhile
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("store down")
        return [item * 10 for item in items]


@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=40), limit=st.integers(1, 20))
def test_every_submission_gets_exactly_its_own_results(sizes: list[int], limit: int) -> None:
    async def main() -> tuple[list[list[int]], Recorder]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, limit)
        start = 0
        batches = []
        for size in sizes:
            batches.append(list(range(start, start + size)))
            start += size
        answers = await asyncio.gather(*(coalescer.submit(batch) for batch in batches))
        assert answers == [[i * 10 for i in batch] for batch in batches]
        return batches, recorder

    batches, recorder = asyncio.run(main())
    # Each submission went whole into one call, and a call exceeds the limit only when a
    # single submission does.
    assert sorted(i for call in recorder.calls for i in call) == sorted(
        i for batch in batches for i in batch
    )
    for call in recorder.calls:
        assert len(call) <= limit or any(call == batch for batch in batches)
    # Concurrent submissions shared calls: the first ran alone, the rest in groups.
    if len(batches) > 2 and 2 * max(sizes) <= limit:
        assert len(recorder.calls) < len(batches)


def test_a_lone_submission_runs_at_once() -> None:
    async def main() -> list[list[int]]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, 100)
        assert await coalescer.submit([1]) == [10]
        assert await coalescer.submit([2, 3]) == [20, 30]
        return recorder.calls

    assert asyncio.run(main()) == [[1], [2, 3]]


def test_a_failed_call_fails_its_submitters_only() -> None:
    async def main() -> None:
        recorder = Recorder(fail_on=5)
        coalescer = Coalescer(recorder, 100)
        first = asyncio.ensure_future(coalescer.submit([1]))
        await asyncio.sleep(0)  # the first call is running
        doomed = [asyncio.ensure_future(coalescer.submit([n])) for n in (4, 5)]
        assert await first == [10]
        for task in doomed:
            with pytest.raises(RuntimeError, match="store down"):
                await task
        assert await coalescer.submit([6]) == [60]  # and the next call works

    asyncio.run(main())


def test_a_cancelled_submitter_does_not_stop_the_others() -> None:
    async def main() -> None:
        coalescer = Coalescer(Recorder(), 100)
        first = asyncio.ensure_future(coalescer.submit([1]))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(coalescer.submit([2]))
        kept = asyncio.ensure_future(coalescer.submit([3]))
        await asyncio.sleep(0)
        gone.cancel()
        assert await first == [10]
        assert await kept == [30]

    asyncio.run(main())
