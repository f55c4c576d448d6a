"""The Batcher alone: what arrives together leaves together; each caller gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from relayq.core.batching import Batcher


class Recorder:
    """A write that records its batches and answers each item by doubling it."""

    def __init__(self, fail_items: frozenset[int] = frozenset(), delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.fail_items = fail_items
        self.delay = delay

    async def write(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await asyncio.sleep(self.delay)
        return [ValueError(f"bad {i}") if i in self.fail_items else i * 2 for i in items]


async def test_calls_made_in_one_turn_share_one_write() -> None:
    rec = Recorder()
    batcher = Batcher(rec.write, max_batch=100)
    answers = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert answers == [i * 2 for i in range(10)]
    assert rec.batches == [list(range(10))]


async def test_a_full_batch_leaves_at_once_and_the_rest_follow() -> None:
    rec = Recorder()
    batcher = Batcher(rec.write, max_batch=4, max_in_flight=4)
    answers = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert answers == [i * 2 for i in range(10)]
    assert [len(b) for b in rec.batches] == [4, 4, 2]


async def test_one_item_failing_fails_only_that_caller() -> None:
    batcher = Batcher(Recorder(fail_items=frozenset({3})).write, max_batch=100)
    answers = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    assert answers[:3] == [0, 2, 4] and answers[4] == 8
    assert isinstance(answers[3], ValueError) and str(answers[3]) == "bad 3"


async def test_a_write_that_fails_whole_answers_every_caller_with_its_error() -> None:
    async def down(items: list[int]) -> list[int]:
        raise ConnectionError("store unreachable")

    batcher = Batcher(down, max_batch=100)
    answers = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(a, ConnectionError) for a in answers)
    # The batcher is not stuck after a failed write.
    ok = Batcher(Recorder().write, max_batch=100)
    assert await ok.submit(1) == 2


async def test_items_arriving_during_a_write_wait_and_leave_together() -> None:
    rec = Recorder(delay=0.05)
    batcher = Batcher(rec.write, max_batch=100, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)  # the first write is in flight
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.gather(first, *later)
    assert rec.batches == [[0], [1, 2, 3, 4, 5]]


async def test_the_window_gathers_calls_from_several_turns() -> None:
    rec = Recorder()
    batcher = Batcher(rec.write, max_batch=100, window_seconds=0.02)

    async def late(i: int) -> int:
        await asyncio.sleep(0.001 * i)
        return await batcher.submit(i)

    await asyncio.gather(*(late(i) for i in range(5)))
    assert rec.batches == [[0, 1, 2, 3, 4]]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    rec = Recorder(delay=0.02)
    batcher = Batcher(rec.write, max_batch=100)
    gone = asyncio.ensure_future(batcher.submit(1))
    stays = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.005)
    gone.cancel()
    assert await stays == 4
    assert rec.batches == [[1, 2]]  # its item was written all the same, as a lone call's would be
    with pytest.raises(asyncio.CancelledError):
        await gone


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        Batcher(Recorder().write, max_batch=0)
