"""Chaos: jobs keep their promises while workers, Redis masters and MongoDB die under them.

Through the API, a few thousand jobs go in while workers are SIGKILLed every
few seconds (and replaced), Sentinel is made to fail over, the master is
SIGKILLed, and so is the MongoDB server (then restarted). Afterwards, with the
recovery job run, every accepted task must be completed (or failed, where its
type fails on purpose), and every effect applied exactly once.
`RELAYQ_CHAOS_SECONDS` sets how long jobs are submitted and faults injected
(default 75) and `RELAYQ_CHAOS_RATE` the jobs per second (default 40): 3,000
jobs, and 300 purchases at `RELAYQ_CHAOS_PURCHASE_RATE` (default 4), half of
them of one identical amount;
`make soak DURATION=600 RATE=10` runs it longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from relayq.core.settings import Settings
from tests.chaos.stack import API_KEY, ChaosStack
from tests.chaos.workload import ApiClient, GenericWorkload, PurchaseWorkload, Workload

CHAOS_SECONDS = float(os.environ.get("RELAYQ_CHAOS_SECONDS", "75"))
# Jobs per second offered through the API. Ten worker processes, the API, five
# Redis servers and the store share two cores here: the default offers 3,000 jobs.
RATE = float(os.environ.get("RELAYQ_CHAOS_RATE", "40"))
# Purchases per second: each is a swap bundle, a transfer and a dozen store writes.
PURCHASE_RATE = float(os.environ.get("RELAYQ_CHAOS_PURCHASE_RATE", "4"))
WORKER_KILL_EVERY_SECONDS = 3.0
# One fault cycle: forced failover, MongoDB killed and restarted, master killed.
CYCLE_SECONDS = min(60.0, CHAOS_SECONDS)
DRAIN_SECONDS = max(240.0, CHAOS_SECONDS * RATE)
# How long the final reconciliation may wait for the last transactions to be final.
RECONCILE_SECONDS = 60.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(CHAOS_SECONDS + DRAIN_SECONDS + 300))]


async def _inject_faults(stack: ChaosStack, seconds: float) -> None:
    """Worker kills every few seconds; each cycle: a failover, a MongoDB crash, a dead master."""
    start = time.monotonic()
    plan = []
    cycle = 0.0
    while cycle < seconds:
        plan += [
            (cycle + 0.25 * CYCLE_SECONDS, stack.forced_failover),
            (cycle + 0.50 * CYCLE_SECONDS, stack.crash_store),
            (cycle + 0.75 * CYCLE_SECONDS, stack.kill_master),
        ]
        # RPC errors while purchases poll the chain, several times a cycle.
        plan += [(cycle + f * CYCLE_SECONDS, stack.rpc_faults) for f in (0.1, 0.4, 0.6, 0.9)]
        cycle += CYCLE_SECONDS
    plan = sorted((p for p in plan if p[0] < seconds), key=lambda p: p[0])
    next_kill = WORKER_KILL_EVERY_SECONDS
    while (elapsed := time.monotonic() - start) < seconds:
        if plan and elapsed >= plan[0][0]:
            _, fault = plan.pop(0)
            await asyncio.to_thread(fault)
        elif elapsed >= next_kill:
            await asyncio.to_thread(stack.kill_random_worker)
            next_kill += WORKER_KILL_EVERY_SECONDS
        else:
            await asyncio.sleep(0.1)
    for _, fault in plan:  # a fault planned late still happens once
        await asyncio.to_thread(fault)


async def _drain(workloads: list[Workload], db: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        try:
            left = sum([await w.pending(db) for w in workloads])
        except Exception:  # MongoDB may still be coming back
            left = -1
        if left == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{left} tasks unfinished {timeout}s after the faults stopped")
        await asyncio.sleep(1.0)


async def test_every_accepted_job_finishes_with_its_effect_applied_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = Settings.from_env({})
    stack = ChaosStack(tmp_path, base)
    workloads: list[Workload] = [GenericWorkload(rate=RATE)]
    figures: dict[str, Any] = {"chaosSeconds": CHAOS_SECONDS, "rate": RATE}
    try:
        await asyncio.to_thread(stack.start)
        chain = json.loads((tmp_path / "devchain" / "chain.json").read_text())
        workloads.append(
            PurchaseWorkload(chain["rpcUrl"], chain["contract"]["owner"], rate=PURCHASE_RATE)
        )
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            stack.settings.mongo_url, serverSelectionTimeoutMS=5000
        )
        db = mongo[stack.settings.mongo_database]
        async with aiohttp.ClientSession() as session:
            api = ApiClient(session, f"http://127.0.0.1:{stack.api_port}", API_KEY)
            t0 = time.monotonic()
            await asyncio.gather(
                *(w.submit(api, CHAOS_SECONDS) for w in workloads),
                _inject_faults(stack, CHAOS_SECONDS),
            )
            figures["submitSeconds"] = round(time.monotonic() - t0, 1)
            figures["apiRetriedAnswers"] = api.refused
            figures["apiConnectionErrors"] = api.connection_errors
        figures["drainSeconds"] = round(await _drain(workloads, db, DRAIN_SECONDS), 1)
        await asyncio.to_thread(stack.stop_recovery_loop)
        final = await asyncio.to_thread(stack.recovery_once)
        assert final["exitCode"] == 0 and final["outcome"] == "success", final
        for w in workloads:
            figures[w.name] = await w.verify(db)
        await mongo.close()
        figures["reconcile"] = await _reconciled(stack)
        figures.update(_process_figures(stack, final))
    finally:
        await asyncio.to_thread(stack.stop)
        figures["faults"] = {
            "workersKilled": stack.events.workers_killed,
            "workersStarted": stack.events.workers_started,
            "forcedFailovers": stack.events.forced_failovers,
            "rpcFaults": stack.events.rpc_faults,
            "mastersKilled": stack.events.masters_killed,
            "storeCrashes": stack.events.store_crashes,
            "timeline": stack.events.log,
        }
        out = tmp_path / "chaos-figures.json"
        out.write_text(json.dumps(figures, indent=2))
        with capsys.disabled():
            print(f"\nchaos figures ({out}):\n{json.dumps(figures, indent=2)}", flush=True)
    assert stack.events.forced_failovers >= 1 and stack.events.masters_killed >= 1
    assert stack.events.store_crashes >= 1 and stack.events.workers_killed >= 3


async def _reconciled(stack: ChaosStack) -> dict[str, Any]:
    """A reconciliation of the whole run must find the chain and the records agreeing.

    It reads the chain at `finalized`: a run right after the drain may not yet see
    the newest transfers (32 slots), so it is repeated until clean or the bound."""
    deadline = time.monotonic() + RECONCILE_SECONDS
    while True:
        report = await asyncio.to_thread(stack.reconcile_once)
        assert report["exitCode"] == 0 and report["outcome"] == "success", report
        if report["clean"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert report["clean"], report["discrepancies"]
    return {k: report[k] for k in ("purchases", "transactions", "counts", "durationSeconds")}


def _process_figures(stack: ChaosStack, final: dict[str, Any]) -> dict[str, Any]:
    logs = stack.worker_logs()
    reclaimed = sum(
        int(line.get("count", 0))
        for line in logs
        if line.get("msg") == "reclaimed claims of a dead worker"
    )
    summaries = [*stack.recovery_summaries(), final]
    ok = [s for s in summaries if s.get("outcome") == "success"]
    return {
        "reclaimedByWorkers": reclaimed,
        "workerRedisErrors": sum(
            1 for line in logs if line.get("msg") in ("claim failed", "wait failed")
        ),
        "recovery": {
            "runs": len(summaries),
            "succeeded": len(ok),
            "failed": sum(1 for s in summaries if s.get("outcome") == "failure"),
            "skipped": sum(1 for s in summaries if s.get("outcome") == "skipped"),
            "redispatched": sum(int(s.get("redispatchedTotal", 0)) for s in ok),
            "reclaimed": sum(int(s.get("reclaimed", 0)) for s in ok),
            "settled": sum(int(s.get("settled", 0)) for s in ok),
            "finalRun": {k: final.get(k) for k in ("redispatchedTotal", "reclaimed", "settled")},
        },
    }
