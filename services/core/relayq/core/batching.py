"""Coalescing of concurrent calls into one round trip (group commit, auto-pipelining).

Callers `await batcher.submit(item)` one item at a time, as if each went alone;
the batcher gathers the items that arrive together and hands them to one
`write(items)` call, which answers each item by position: a value, or the
exception that item alone raised. An exception of the whole write (the server
went away mid-batch) is every item's answer, as it would have been had each
gone alone.

A batch leaves when it is full (`max_batch`), or `window_seconds` after its
first item (0: at the end of the current event-loop turn, which costs no
latency and still catches everything one claim or one burst started). At most
`max_in_flight` writes run at once; items arriving while they do wait and
leave together when one finishes, so under load batches grow by themselves,
as in a database's group commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class Batcher(Generic[I, O]):
    """Gathers concurrent `submit` calls into batched `write` calls."""

    def __init__(
        self,
        write: Callable[[list[I]], Awaitable[Sequence[O | BaseException]]],
        *,
        max_batch: int,
        window_seconds: float = 0.0,
        max_in_flight: int = 1,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or window_seconds < 0:
            raise ValueError("max_batch and max_in_flight must be >= 1, the window >= 0")
        self._write = write
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[I, asyncio.Future[O]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.batches = 0  # writes made, for tests and benchmarks
        self.items = 0

    async def submit(self, item: I) -> O:
        """`item`'s answer, once the write carrying it has finished."""
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._schedule()
        # A cancelled caller cancels only its own future and leaves its item in
        # the batch: a write cannot be taken back once it may have reached the
        # server, as with a lone call. The batch skips answering a cancelled future.
        return await future

    def _schedule(self) -> None:
        if not self._pending or len(self._flushes) >= self.max_in_flight:
            return  # a finishing write schedules the waiting items
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            if self.window_seconds > 0:
                self._timer = loop.call_later(self.window_seconds, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or len(self._flushes) >= self.max_in_flight:
            return
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        flush = asyncio.get_running_loop().create_task(self._run(batch))
        self._flushes.add(flush)
        flush.add_done_callback(self._done)

    def _done(self, flush: asyncio.Task[None]) -> None:
        self._flushes.discard(flush)
        if self._pending:
            # These waited for a free write already: they leave now, together.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush()

    async def _run(self, batch: list[tuple[I, asyncio.Future[O]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            answers = await self._write([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"a batched write answered {len(answers)} of {len(batch)}")
        except BaseException as exc:  # the whole write failed: every item's answer
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)
