"""The executor's state machine, through its seams: what a run's ending asks of the lifecycle.

The lifecycle here records the named transitions it is asked for and answers
as a guard would (the task, or None when told another writer got there first).
The guards themselves are the store's, proven on a real server by
tests/store_conformance and tests/integration; this file pins which transition
each way a run can end leads to, and the Outcome the runner gets back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from relayq.core.jobs import (
    Defer,
    JobContext,
    JobType,
    NeedsReview,
    PermanentError,
    Registry,
    Task,
    TaskState,
)
from relayq.core.keys import Keys
from relayq.core.priorities import Priority
from relayq.core.queue import Delivery, Message, Queue
from relayq.core.settings import Settings
from relayq.worker.executor import Ack, RetryIn, TaskExecutor

TASK_ID = "0" * 31 + "1"


def task(type_: str, attempts: int = 0, max_attempts: int = 3) -> Task:
    at = datetime.now(UTC)
    return Task(
        id=TASK_ID, type=type_, priority=Priority.HIGH, payload={}, state=TaskState.QUEUED,
        version=3, attempts=attempts, max_attempts=max_attempts, attempt_budget=max_attempts,
        idempotency_key=None, payload_hash="h", created_at=at, queued_at=at, started_at=None,
        finished_at=None, run_at=None, last_error=None, result=None, worker=None, trace={},
    )  # fmt: skip


@dataclass
class RecordingLifecycle:
    """Answers like the guarded store would for one task, and records each call."""

    current: Task
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lose: set[str] = field(default_factory=set)  # transitions another writer wins

    def _answer(self, name: str, state: TaskState, **kw: Any) -> Task | None:
        self.calls.append((name, kw))
        if name in self.lose:
            return None
        self.current = replace(self.current, state=state, version=self.current.version + 1)
        return self.current

    async def start(self, task_id: str, worker: str, *, redelivered: bool) -> Task | None:
        self.current = replace(self.current, attempts=self.current.attempts + 1)
        return self._answer("start", TaskState.ACTIVE, redelivered=redelivered)

    async def complete(self, task: Task, result: Any) -> Task | None:
        return self._answer("complete", TaskState.COMPLETED, result=result)

    async def retry_later(self, task: Task, error: str, delay_seconds: float) -> Task | None:
        return self._answer("retry_later", TaskState.RETRYING, error=error, delay=delay_seconds)

    async def defer(self, task: Task, reason: str, seconds: float) -> Task | None:
        return self._answer("defer", TaskState.RETRYING, reason=reason, seconds=seconds)

    async def hand_back(self, task: Task, reason: str) -> Task | None:
        return self._answer("hand_back", TaskState.RETRYING, reason=reason)

    async def dead_letter(self, task_id: str, **kw: Any) -> Task | None:
        return self._answer("dead_letter", TaskState.FAILED, **kw)

    async def park(
        self, task: Task, reason: str, details: dict[str, Any] | None = None
    ) -> Task | None:
        return self._answer("park", TaskState.NEEDS_REVIEW, reason=reason, details=details)

    async def park_unclaimed(self, task_id: str, **kw: Any) -> Task | None:
        return self._answer("park_unclaimed", TaskState.NEEDS_REVIEW, **kw)


async def ok(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"attempt": ctx.attempt}


async def boom(payload: dict[str, Any], ctx: JobContext) -> None:
    raise RuntimeError("boom")


async def refuse(payload: dict[str, Any], ctx: JobContext) -> None:
    raise PermanentError("never")


async def later(payload: dict[str, Any], ctx: JobContext) -> None:
    raise Defer(7.5, "not yet")


async def undecided(payload: dict[str, Any], ctx: JobContext) -> None:
    raise NeedsReview("partly-landed", {"landed": ["sig-1"]})


async def hang(payload: dict[str, Any], ctx: JobContext) -> None:
    await asyncio.sleep(10)


async def unstorable(payload: dict[str, Any], ctx: JobContext) -> object:
    return object()


REGISTRY = Registry(
    [
        JobType("ok", ok),
        JobType("boom", boom),
        JobType("refuse", refuse),
        JobType("later", later),
        JobType("undecided", undecided),
        JobType("hang", hang, timeout_seconds=0.05),
        JobType("unstorable", unstorable),
        JobType("moves-money", boom, crash_safe=True),
        JobType("moves-money-refused", refuse, crash_safe=True),
    ]
)


def executor(lifecycle: RecordingLifecycle) -> TaskExecutor:
    # The queue is only touched for rate limits, which no type here has.
    queue = Queue(Redis(port=1), Keys("unit"))
    return TaskExecutor(Settings.from_env({}), REGISTRY, lifecycle, queue)  # type: ignore[arg-type]


def delivery(type_: str, deliveries: int = 1) -> Delivery:
    return Delivery(Priority.HIGH, "1-0", Message(TASK_ID, type_), deliveries=deliveries)


async def run(type_: str, **kw: Any) -> tuple[Any, RecordingLifecycle]:
    lose = kw.pop("lose", set())
    life = RecordingLifecycle(task(type_, **kw), lose=lose)
    outcome = await executor(life).execute(delivery(type_), "w-1")
    return outcome, life


def names(life: RecordingLifecycle) -> list[str]:
    return [name for name, _ in life.calls]


async def test_a_successful_run_completes_with_the_handler_result() -> None:
    outcome, life = await run("ok")
    assert outcome == Ack()
    assert names(life) == ["start", "complete"]
    assert life.calls[1][1]["result"] == {"attempt": 1}


async def test_a_first_delivery_does_not_take_over_an_active_task() -> None:
    _, life = await run("ok")
    assert life.calls[0][1] == {"redelivered": False}


async def test_a_failure_with_attempts_left_retries_later_and_puts_the_delivery_back() -> None:
    outcome, life = await run("boom")
    assert names(life) == ["start", "retry_later"]
    delay = life.calls[1][1]["delay"]
    assert isinstance(outcome, RetryIn) and outcome.seconds == delay and delay > 0
    assert life.calls[1][1]["error"] == "RuntimeError: boom"


async def test_the_last_attempt_failing_dead_letters_for_attempts() -> None:
    outcome, life = await run("boom", attempts=2, max_attempts=3)
    assert outcome == Ack()
    assert names(life) == ["start", "dead_letter"]
    assert life.calls[1][1]["reason"] == "attempts"


async def test_a_permanent_error_dead_letters_at_once() -> None:
    outcome, life = await run("refuse")
    assert outcome == Ack() and names(life) == ["start", "dead_letter"]
    assert life.calls[1][1]["reason"] == "permanent"


async def test_defer_waits_without_spending_an_attempt() -> None:
    outcome, life = await run("later")
    assert outcome == RetryIn(7.5)
    assert names(life) == ["start", "defer"]
    assert life.calls[1][1] == {"reason": "not yet", "seconds": 7.5}


async def test_needs_review_parks_the_task_with_its_details_and_acks() -> None:
    outcome, life = await run("undecided")
    assert outcome == Ack()
    assert names(life) == ["start", "park"]
    assert life.calls[1][1] == {"reason": "partly-landed", "details": {"landed": ["sig-1"]}}


async def test_a_superseded_park_is_acked() -> None:
    outcome, life = await run("undecided", lose={"park"})
    assert outcome == Ack() and names(life) == ["start", "park"]


async def test_a_run_past_its_timeout_is_a_failed_attempt() -> None:
    outcome, life = await run("hang")
    assert isinstance(outcome, RetryIn)
    assert names(life) == ["start", "retry_later"]
    assert life.calls[1][1]["error"] == "timed out after 0.05s"


async def test_a_result_that_is_not_json_dead_letters_as_permanent() -> None:
    outcome, life = await run("unstorable")
    assert outcome == Ack() and names(life) == ["start", "dead_letter"]
    assert life.calls[1][1]["reason"] == "permanent"


async def test_a_delivery_whose_start_loses_the_guard_is_dropped_without_running() -> None:
    outcome, life = await run("boom", lose={"start"})
    assert outcome == Ack() and names(life) == ["start"]


async def test_a_superseded_retry_is_acked_not_put_back() -> None:
    outcome, life = await run("boom", lose={"retry_later"})
    assert outcome == Ack() and names(life) == ["start", "retry_later"]


async def test_an_unknown_type_is_dead_lettered_without_a_start() -> None:
    life = RecordingLifecycle(task("gone"))
    outcome = await executor(life).execute(delivery("gone"), "w-1")
    assert outcome == Ack() and names(life) == ["dead_letter"]
    assert life.calls[0][1]["reason"] == "unknown-type"


async def test_a_redelivery_may_take_over_an_active_task() -> None:
    life = RecordingLifecycle(task("ok"))
    await executor(life).execute(delivery("ok", deliveries=2), "w-2")
    assert life.calls[0] == ("start", {"redelivered": True})


async def test_poison_dead_letters_whatever_state_short_of_finished() -> None:
    life = RecordingLifecycle(task("ok"))
    await executor(life).poison(delivery("ok", deliveries=6))
    assert names(life) == ["dead_letter"]
    kw = life.calls[0][1]
    assert kw["reason"] == "poison" and TaskState.QUEUED in kw["expected"]
    assert TaskState.ACTIVE in kw["expected"] and kw["deliveries"] == 6


async def test_give_back_returns_a_running_task_without_counting_the_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life = RecordingLifecycle(task("hang"))
    ex = executor(life)
    run_task = asyncio.create_task(ex.execute(delivery("hang"), "w-1"))
    await asyncio.sleep(0.01)  # started, running its handler
    caplog.set_level(logging.ERROR)
    assert await ex.give_back(delivery("hang")) is True
    run_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run_task
    assert names(life)[:2] == ["start", "hand_back"]
    assert await ex.give_back(delivery("hang")) is False  # nothing of it runs any more


async def test_the_queue_wait_is_measured_to_the_records_start_not_to_the_writes_return() -> None:
    from relayq.core.telemetry import QUEUE_WAIT_SECONDS

    # Ready at 1 s after the epoch (entry id "1000-0"); the record says it started 2.5 s later.
    started_at = datetime.fromtimestamp(3.5, UTC)
    life = RecordingLifecycle(replace(task("ok"), started_at=started_at))
    hist = QUEUE_WAIT_SECONDS.labels(priority="high", type="ok")
    before = hist._sum.get()  # type: ignore[attr-defined]
    ready = Delivery(Priority.HIGH, "1000-0", Message(TASK_ID, "ok"))
    assert await executor(life).execute(ready, "w-1") == Ack()
    assert hist._sum.get() - before == pytest.approx(2.5)  # type: ignore[attr-defined]


async def test_a_completion_the_batch_loses_is_dropped_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="relayq.worker")
    outcome, life = await run("ok", lose={"complete"})
    assert outcome == Ack() and names(life) == ["start", "complete"]
    superseded = [r for r in caplog.records if "superseded" in r.getMessage()]
    assert len(superseded) == 1


async def test_a_crash_safe_job_past_its_delivery_limit_is_parked_not_dead_lettered() -> None:
    life = RecordingLifecycle(task("moves-money"))
    await executor(life).poison(delivery("moves-money", deliveries=6))
    assert names(life) == ["park_unclaimed"]
    kw = life.calls[0][1]
    assert kw["reason"] == "deliveries" and kw["details"]["deliveries"] == 6


async def test_a_crash_safe_job_out_of_attempts_is_parked_not_dead_lettered() -> None:
    outcome, life = await run("moves-money", attempts=2, max_attempts=3)
    assert outcome == Ack() and names(life) == ["start", "park"]
    assert life.calls[1][1]["reason"] == "attempts"
    assert "boom" in life.calls[1][1]["details"]["error"]


async def test_a_crash_safe_job_may_still_refuse_permanently() -> None:
    # Its own verdict (a swap the chain refused) is not a limit reached: dead-lettered.
    outcome, life = await run("moves-money-refused")
    assert outcome == Ack() and names(life) == ["start", "dead_letter"]
