"""The measurement protocol every engine follows, and helpers for it.

1. Enqueue: `jobs` no-op jobs through the library's normal single-job enqueue
   call, from one process, with at most `IN_FLIGHT` calls outstanding (chunks
   gathered together). Timed from the first call to the last reply.
2. Process: with those jobs queued, start one worker of the library (its normal
   worker class) in this process with the given concurrency and a no-op async
   job function. Timed from starting the worker until the job function has run
   `jobs` times (a `Countdown` in the job function). The worker is then stopped
   cleanly, outside the timed part.

Both phases report jobs per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

IN_FLIGHT = 100
"""At most this many enqueue calls are awaited together."""

QUEUE_NAME = "bench"
"""The queue (or stream, or list) every engine uses, where it lets us pick."""

PROCESS_TIMEOUT_S = 600.0
"""Give up on the process phase after this long."""

SETTLE_TIMEOUT_S = 30.0
"""How long to wait for a library's own completion bookkeeping after the last job ran."""


def rates(jobs: int, enqueue_s: float, process_s: float) -> dict[str, float]:
    """The result dict every `measure` returns."""
    return {"enqueue_per_s": jobs / enqueue_s, "process_per_s": jobs / process_s}


async def enqueue_all(jobs: int, enqueue_one: Callable[[int], Awaitable[object]]) -> float:
    """Await `enqueue_one(i)` for every i in range(jobs), `IN_FLIGHT` at a time.

    Returns the seconds it took.
    """
    started = time.perf_counter()
    for first in range(0, jobs, IN_FLIGHT):
        last = min(first + IN_FLIGHT, jobs)
        await asyncio.gather(*(enqueue_one(i) for i in range(first, last)))
    return time.perf_counter() - started


class Countdown:
    """Counts calls of the benchmark's job function.

    Attributes:
        expected: how many calls mean every job ran.
        calls: calls so far.
        done: set by the call that reaches `expected`.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.calls = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        """Record one job-function call."""
        self.calls += 1
        if self.calls >= self.expected:
            self.done.set()

    async def wait(self, worker: asyncio.Task[Any], limit_s: float = PROCESS_TIMEOUT_S) -> None:
        """Return once every job ran; raise if `worker` ends first or after `limit_s`."""
        waiter = asyncio.ensure_future(self.done.wait())
        try:
            finished, _ = await asyncio.wait(
                {waiter, worker}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if self.done.is_set():
            return
        if worker in finished:
            cause = None if worker.cancelled() else worker.exception()
            raise RuntimeError(f"worker stopped after {self.calls}/{self.expected} jobs") from cause
        raise TimeoutError(f"only {self.calls}/{self.expected} jobs ran within {limit_s}s")


async def wait_until(
    predicate: Callable[[], bool], what: str, limit_s: float = SETTLE_TIMEOUT_S
) -> None:
    """Poll `predicate` every millisecond until it holds; raise TimeoutError after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {limit_s}s")
        await asyncio.sleep(0.001)


async def finish_task(task: asyncio.Task[Any], limit_s: float = SETTLE_TIMEOUT_S) -> None:
    """Let a worker task that was asked to stop end; cancel it if it takes too long.

    A worker task ending cancelled (some libraries stop that way) is not an error.
    """
    await asyncio.wait({task}, timeout=limit_s)
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise RuntimeError("worker failed while stopping") from task.exception()
