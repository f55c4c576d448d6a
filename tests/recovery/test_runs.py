"""Recovery runs: the lock, exit status, JSON summary, retention and metrics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relayq.core.clients import Clients
from relayq.core.jobs import TaskState
from relayq.core.priorities import Priority
from relayq.core.run_lock import LockLost, RunLock
from relayq.core.settings import SettingsError
from relayq.core.store import now
from relayq.dev.servers import REPO_ROOT, free_port
from relayq.recovery.retention import TTL_INDEX
from relayq.recovery.settings import RecoverySettings
from tests.conftest import settings_env
from tests.recovery.helpers import backdate, held, insert, move, recovery, run, run_process


async def _lost(clients: Clients, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        task = await insert(clients)
        await backdate(clients, task.id, 60)
        ids.append(task.id)
    return ids


# -- the lock ------------------------------------------------------------------


async def test_a_run_finding_the_lock_held_does_no_work(clients: Clients) -> None:
    lost = await _lost(clients)
    other = await RunLock(clients.queue, "recovery", 60).acquire()
    assert other is not None

    skipped = await run(clients)

    assert skipped.outcome == "skipped" and skipped.redispatched_total == 0
    assert await held(clients, Priority.HIGH) == []
    await RunLock(clients.queue, "recovery", 60).release(other)
    done = await run(clients)
    assert done.outcome == "success" and done.fence == other.fence + 1
    assert await held(clients, Priority.HIGH) == lost


async def test_the_lock_hands_out_rising_fences_and_releases_only_its_own(
    clients: Clients,
) -> None:
    lock = RunLock(clients.queue, "recovery", 60)
    first = await lock.acquire()
    assert first is not None and await lock.acquire() is None
    await clients.redis.delete(lock.key)  # expired
    second = await lock.acquire()
    assert second is not None and second.fence == first.fence + 1
    assert not await lock.release(first)  # the late run cannot drop the new holder's lock
    with pytest.raises(LockLost):
        await lock.extend(first)
    await lock.extend(second)
    assert 59_000 < await clients.redis.pttl(lock.key) <= 60_000
    assert await lock.release(second)
    assert not await clients.redis.exists(lock.key)


async def test_a_run_that_loses_its_lock_fails_and_records_it(clients: Clients) -> None:
    await _lost(clients)
    rec = recovery(clients)
    original = rec.lock.extend

    async def steal(held: Any) -> None:
        await clients.redis.set(rec.lock.key, "someone-else")
        await original(held)

    rec.lock.extend = steal  # type: ignore[method-assign]
    with pytest.raises(LockLost):
        await rec.run_once()
    report = await clients.redis.hgetall(clients.queue.keys.recovery_report)
    assert report["runs_failure"] == "1" and report["last_outcome"] == "failure"
    assert "last_success_ts" not in report
    assert await clients.redis.get(rec.lock.key) == "someone-else"


async def test_concurrent_processes_dispatch_each_lost_task_once(clients: Clients) -> None:
    ids = await _lost(clients, 30)

    runs = await asyncio.gather(
        *(asyncio.to_thread(run_process, clients.settings) for _ in range(2))
    )

    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    outcomes = sorted(r.summary()["outcome"] for r in runs)
    assert "success" in outcomes and set(outcomes) <= {"success", "skipped"}
    assert sum(r.summary().get("redispatchedTotal", 0) for r in runs) == 30
    assert sorted(await held(clients, Priority.HIGH)) == sorted(ids)


# -- exit status and the summary ----------------------------------------------


async def test_a_run_prints_a_json_summary_and_exits_zero(clients: Clients) -> None:
    lost = await _lost(clients, 2)
    done = await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.COMPLETED)
    await clients.store.tasks.update_one(
        {"_id": done.id}, {"$set": {"finished_at": now() - timedelta(days=8)}}
    )

    result = run_process(clients.settings, RELAYQ_RETENTION_TTL_INDEX="off")

    assert result.returncode == 0, result.stderr
    summary = result.summary()
    assert summary["outcome"] == "success"
    assert summary["redispatched"] == {"pending": 0, "queued": 2, "retrying": 0, "active": 0}
    assert summary["redispatchedTotal"] == 2
    assert summary["retention"] == {"mode": "bounded-delete", "deleted": 1, "stripped": 0}
    assert summary["scanned"]["candidates"] == 2
    assert summary["fence"] >= 1 and summary["durationSeconds"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", summary["startedAt"])
    assert sorted(await held(clients, Priority.HIGH)) == sorted(lost)
    assert '"msg": "recovery run finished"' in result.stderr


async def test_redis_down_exits_non_zero_with_a_failure_summary(clients: Clients) -> None:
    result = run_process(clients.settings, RELAYQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    assert result.returncode == 1
    summary = result.summary()
    assert summary["outcome"] == "failure" and "ConnectionError" in summary["error"]


async def test_mongodb_down_exits_non_zero_and_the_failure_is_reported(clients: Clients) -> None:
    result = run_process(clients.settings, RELAYQ_MONGO_URL=f"mongodb://127.0.0.1:{free_port()}/")

    assert result.returncode == 1, result.stdout
    assert result.summary()["outcome"] == "failure"
    report = await clients.redis.hgetall(clients.queue.keys.recovery_report)
    assert report["runs_failure"] == "1" and report["last_outcome"] == "failure"
    lock = RunLock(clients.queue, "recovery", 60)
    assert not await clients.redis.exists(lock.key)  # released for the next run


async def test_bad_settings_exit_with_status_two(clients: Clients) -> None:
    result = run_process(clients.settings, RELAYQ_RECOVERY_GRACE_SECONDS="soon")
    assert result.returncode == 2
    assert "RELAYQ_RECOVERY_GRACE_SECONDS" in result.stderr


def test_recovery_settings_are_read_and_checked() -> None:
    s = RecoverySettings.from_env(
        {"RELAYQ_RECOVERY_GRACE_SECONDS": "5", "RELAYQ_RETENTION_SECONDS": "0",
         "RELAYQ_RECOVERY_MAX_TASKS": "10"}
    )  # fmt: skip
    assert (s.grace_seconds, s.retention_seconds, s.max_tasks) == (5.0, 0.0, 10)
    for name, value in (
        ("RELAYQ_RECOVERY_GRACE_SECONDS", "-1"),
        ("RELAYQ_RECOVERY_LOCK_SECONDS", "0"),
        ("RELAYQ_RETENTION_MAX_DELETES", "inf"),
    ):
        with pytest.raises(SettingsError, match=name):
            RecoverySettings.from_env({name: value})


def test_loop_mode_runs_repeatedly_until_sigterm(clients: Clients) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "relayq.cli", "recovery", "--loop", "0.2"],
        env=settings_env(clients.settings),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fences = [json.loads(line)["fence"] for line in lines]
    assert all(json.loads(line)["outcome"] == "success" for line in lines)
    assert fences == sorted(set(fences))


# -- retention -------------------------------------------------------------------


async def test_retention_without_a_ttl_index_deletes_only_old_finished_tasks(
    clients: Clients,
) -> None:
    old = now() - timedelta(days=8)
    gone = [
        await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.COMPLETED),
        await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.FAILED),
    ]
    recent = await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.COMPLETED)
    unfinished = await insert(clients)
    for t in (*gone, unfinished):
        await clients.store.tasks.update_one({"_id": t.id}, {"$set": {"finished_at": old}})
    await clients.store.tasks.update_one(
        {"_id": recent.id}, {"$set": {"finished_at": now() - timedelta(days=6)}}
    )

    summary = await run(clients, max_deletes=1, ttl_index=False)
    assert summary.retention is not None
    assert summary.retention.to_public() == {"mode": "bounded-delete", "deleted": 1, "stripped": 0}
    assert (await run(clients, ttl_index=False)).retention.deleted == 1  # type: ignore[union-attr]
    assert (await run(clients, ttl_index=False)).retention.deleted == 0  # type: ignore[union-attr]

    left = {d["_id"] for d in await clients.store.tasks.find({}, {"_id": 1}).to_list()}
    assert left == {recent.id, unfinished.id}
    names = [i["name"] async for i in await clients.store.tasks.list_indexes()]
    assert TTL_INDEX not in names


async def test_retention_keeps_a_ttl_index_on_finished_at_and_retunes_it(clients: Clients) -> None:
    # It expires at the idempotency window (never shorter than retention).
    summary = await run(clients, retention_seconds=3600, idempotency_window_seconds=0)
    assert summary.retention is not None and summary.retention.mode == "ttl-index"
    assert await _ttl_seconds(clients) == 3600

    await run(clients, retention_seconds=3600, idempotency_window_seconds=7200)
    assert await _ttl_seconds(clients) == 7200


async def test_retention_deletes_what_a_ttl_index_left_long_past_retention(
    clients: Clients,
) -> None:
    # A server may accept a TTL index and never expire anything: tasks past
    # retention and the lag are deleted by the run; those within the lag are
    # the TTL monitor's to expire, and unfinished ones nobody's.
    behind = [
        await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.COMPLETED)
        for _ in range(3)
    ]
    within_lag = await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.FAILED)
    unfinished = await insert(clients)
    for t in (*behind, unfinished):
        await clients.store.tasks.update_one(
            {"_id": t.id}, {"$set": {"finished_at": now() - timedelta(days=30)}}
        )
    await clients.store.tasks.update_one(
        {"_id": within_lag.id}, {"$set": {"finished_at": now() - timedelta(days=7, minutes=30)}}
    )

    summary = await run(clients, ttl_lag_seconds=3600)

    assert summary.retention is not None and summary.retention.mode == "ttl-index"
    left = {d["_id"] for d in await clients.store.tasks.find({}, {"_id": 1}).to_list()}
    assert not {t.id for t in behind} & left and unfinished.id in left
    # The server's own TTL monitor may have got to some of them first.
    assert 0 < summary.retention.deleted <= 3 or within_lag.id not in left


async def _ttl_seconds(clients: Clients) -> int | None:
    async for index in await clients.store.tasks.list_indexes():
        if index["name"] == TTL_INDEX:
            return int(index["expireAfterSeconds"])
    return None


async def test_retention_zero_keeps_everything(clients: Clients) -> None:
    done = await move(clients, await insert(clients), TaskState.ACTIVE, TaskState.COMPLETED)
    await clients.store.tasks.update_one(
        {"_id": done.id}, {"$set": {"finished_at": now() - timedelta(days=800)}}
    )
    summary = await run(clients, retention_seconds=0)
    assert summary.retention is not None and summary.retention.mode == "off"
    assert await clients.store.get(done.id) is not None


# -- metrics -----------------------------------------------------------------------


async def test_the_api_exports_what_recovery_runs_did(
    clients: Clients, api: TestClient[Any, Any]
) -> None:
    before = time.time()
    await _lost(clients, 3)
    await run(clients)
    other = await RunLock(clients.queue, "recovery", 60).acquire()
    await run(clients)  # skipped: the lock is held
    assert other is not None

    text = await (await api.get("/metrics")).text()

    values = _samples(text)
    assert values['relayq_recovery_runs_total{outcome="success"}'] == 1
    assert values['relayq_recovery_runs_total{outcome="skipped"}'] == 1
    assert values['relayq_recovery_runs_total{outcome="failure"}'] == 0
    assert values["relayq_recovery_redispatched_total"] == 3
    assert values['relayq_recovery_actions_total{action="redispatched"}'] == 3
    assert values['relayq_recovery_actions_total{action="deleted"}'] == 0
    assert before <= values["relayq_recovery_last_success_timestamp_seconds"] <= time.time()
    assert 0 <= values["relayq_recovery_duration_seconds"] < 30


async def test_metrics_answer_without_recovery_samples_before_any_run(
    clients: Clients, api: TestClient[Any, Any]
) -> None:
    response = await api.get("/metrics")
    assert response.status == 200
    values = _samples(await response.text())
    assert values['relayq_recovery_runs_total{outcome="success"}'] == 0
    assert "relayq_recovery_last_success_timestamp_seconds" not in values


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("relayq_recovery_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
