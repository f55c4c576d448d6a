"""Per-task timing stays exact when the worker's state changes travel in batches.

Each task's queue wait (metric and log) is measured from its own stream entry to
its record's `started_at`, its run time is its own handler's, and each task is
observed once: batching shares a write, never a measurement.
"""

from __future__ import annotations

import logging

import pytest

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.service import JobRequest
from relayq.core.telemetry import QUEUE_WAIT_SECONDS, RUN_SECONDS
from tests.conftest import InProcessWorker, wait_until

JOBS = 30


def observations(histogram: object, **labels: str) -> float:
    return float(histogram.labels(**labels)._sum.get()), int(  # type: ignore[attr-defined]
        sum(b.get() for b in histogram.labels(**labels)._buckets)  # type: ignore[attr-defined]
    )


async def test_queue_wait_and_run_time_metrics_match_the_records(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relayq.worker")
    labels = {"priority": "high", "type": "record"}
    waits_before = observations(QUEUE_WAIT_SECONDS, **labels)
    runs_before = observations(RUN_SECONDS, **labels)
    subs = [
        await clients.service.submit(JobRequest("record", {"seconds": 0.01 * (i % 5)}))
        for i in range(JOBS)
    ]
    entries = await clients.queue.redis.xrange(clients.queue.keys.of(Priority.HIGH).stream)
    ready_ms = {fields["t"]: int(entry_id.split("-")[0]) for entry_id, fields in entries}
    ids = [s.task.id for s in subs]
    assert set(ready_ms) == set(ids)

    async with InProcessWorker(clients, "high", concurrency=JOBS) as worker:

        async def all_done() -> bool:
            tasks = [await clients.store.get(i) for i in ids]
            return all(t is not None and t.state is TaskState.COMPLETED for t in tasks)

        await wait_until(all_done, 30)
    lifecycle = worker.executor.lifecycle
    assert lifecycle._runs.batches < 2 * JOBS  # the starts and completions went in batches

    started = {r.task_id: r for r in caplog.records if r.getMessage() == "job started"}  # type: ignore[attr-defined]
    completed = {r.task_id: r for r in caplog.records if r.getMessage() == "job completed"}  # type: ignore[attr-defined]
    total_wait = total_run = 0.0
    for task_id in ids:
        task = await clients.store.get(task_id)
        assert task is not None and task.started_at and task.finished_at
        wait = task.started_at.timestamp() - ready_ms[task_id] / 1000
        # The logged wait is the record's start less the entry's ready time, to the log's rounding.
        assert started[task_id].queue_wait_s == pytest.approx(max(0.0, wait), abs=1e-4)
        total_wait += max(0.0, wait)
        run_s = completed[task_id].run_s
        total_run += run_s
        assert run_s >= float(task.payload["seconds"])
        # The handler ran inside the record's active span (milliseconds in BSON).
        assert run_s <= (task.finished_at - task.started_at).total_seconds() + 0.002
    wait_sum, wait_count = observations(QUEUE_WAIT_SECONDS, **labels)
    run_sum, run_count = observations(RUN_SECONDS, **labels)
    assert wait_count - waits_before[1] == JOBS and run_count - runs_before[1] == JOBS
    assert wait_sum - waits_before[0] == pytest.approx(total_wait, abs=1e-6)
    # The logged run times are the observed ones, to the log's rounding.
    assert run_sum - runs_before[0] == pytest.approx(total_run, abs=1e-4 * JOBS)
