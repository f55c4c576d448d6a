"""Workloads of the chaos suite: what is submitted through the API, and how it is checked.

A workload submits jobs while faults are injected, then verifies its own
invariants against MongoDB and returns its figures. The generic one below uses
the test job types; a token-purchase workload plugs in the same way (the
`Workload` protocol), next to it in the suite's list.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from pymongo.asynchronous.database import AsyncDatabase

from relayq.core.priorities import Priority

SUBMIT_ATTEMPTS = 40


@dataclass
class Accepted:
    """A job the API accepted (202): its task id and what it should end as."""

    task_id: str
    type: str
    expect: str  # "completed" or "failed"
    planned_failures: int = 0


class ApiClient:
    """POST /v1/jobs with a fresh idempotency key per job, retried through outages.

    A 503 (MongoDB unreachable) or a lost connection is retried with the same
    key, so a retry never makes a second task; only a 202 counts as accepted.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.refused = 0  # answers that were not 202, retried
        self.connection_errors = 0

    async def get(self, path: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}{path}", headers=self.headers) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def post(
        self, path: str, body: dict[str, Any], accept: tuple[int, ...] = (202,)
    ) -> tuple[int, dict[str, Any]]:
        """POST with one idempotency key through every retry; (status, answer) once accepted."""
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                async with self.session.post(
                    f"{self.base_url}{path}", json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=120),
                ) as response:  # fmt: skip
                    if response.status in accept:
                        return response.status, await response.json()
                    self.refused += 1
                    if response.status not in (429, 503):
                        raise AssertionError(f"{response.status}: {await response.text()}")
            except (aiohttp.ClientError, TimeoutError):
                self.connection_errors += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError(f"not accepted after {SUBMIT_ATTEMPTS} attempts: {path} {body}")

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                async with self.session.post(
                    f"{self.base_url}/v1/jobs", json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=120),
                ) as response:  # fmt: skip
                    if response.status == 202:
                        answer: dict[str, Any] = await response.json()
                        return answer
                    self.refused += 1
                    if response.status not in (429, 503):
                        raise AssertionError(f"{response.status}: {await response.text()}")
            except (aiohttp.ClientError, TimeoutError):
                self.connection_errors += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError(f"job not accepted after {SUBMIT_ATTEMPTS} attempts: {body}")


class Workload(Protocol):
    """What the chaos suite runs: submit while faults happen, then verify."""

    name: str

    async def submit(self, api: ApiClient, seconds: float) -> None:
        """Submit jobs for about `seconds`."""
        ...

    async def pending(self, db: AsyncDatabase[dict[str, Any]]) -> int:
        """Accepted tasks not yet in their expected final state."""
        ...

    async def verify(self, db: AsyncDatabase[dict[str, Any]]) -> dict[str, Any]:
        """Assert the invariants; return the figures to report."""
        ...


@dataclass
class GenericWorkload:
    """`effect` jobs (an effect applied once per task), some failing first, plus `fail` jobs.

    Spread over every priority at `rate` jobs per second.
    """

    rate: float = 8.0
    concurrency: int = 16
    name: str = "generic"
    accepted: list[Accepted] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def _next(self) -> tuple[dict[str, Any], Accepted]:
        priority = self.rng.choice(list(Priority)).value
        roll = self.rng.random()
        if roll < 0.05:  # dead-lettered on purpose
            body = {"type": "fail", "payload": {"permanent": True}, "priority": priority}
            return body, Accepted("", "fail", "failed")
        fails = 1 if roll < 0.15 else 0  # a retry through the delayed set
        body = {"type": "effect", "payload": {"failTimes": fails}, "priority": priority}
        return body, Accepted("", "effect", "completed", fails)

    async def submit(self, api: ApiClient, seconds: float) -> None:
        total = int(self.rate * seconds)
        start = time.monotonic()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def one_by_one() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                # Open loop: job i is due at start + i / rate.
                await asyncio.sleep(max(0.0, start + i / self.rate - time.monotonic()))
                body, expected = self._next()
                answer = await api.submit(body)
                expected.task_id = answer["taskId"]
                self.accepted.append(expected)

        await asyncio.gather(*(one_by_one() for _ in range(self.concurrency)))

    async def pending(self, db: AsyncDatabase[dict[str, Any]]) -> int:
        states = await _states(db, [a.task_id for a in self.accepted])
        return sum(1 for a in self.accepted if states.get(a.task_id) != a.expect)

    async def verify(self, db: AsyncDatabase[dict[str, Any]]) -> dict[str, Any]:
        ids = [a.task_id for a in self.accepted]
        assert len(set(ids)) == len(ids), "one accepted job, one task"
        states = await _states(db, ids)
        wrong = [(a.task_id, a.expect, states.get(a.task_id)) for a in self.accepted
                 if states.get(a.task_id) != a.expect]  # fmt: skip
        assert not wrong, f"{len(wrong)} tasks not as expected, e.g. {wrong[:5]}"

        effects = [a for a in self.accepted if a.type == "effect"]
        effect_ids = {a.task_id for a in effects}
        applied = [d["_id"] for d in await db["applied"].find({}, {"_id": 1}).to_list()]
        # Exactly-once effects: one applied record per completed effect task, no more.
        assert len(applied) == len(set(applied))
        assert set(applied) == effect_ids, (
            f"applied {len(applied)}, expected {len(effect_ids)}; "
            f"missing {len(effect_ids - set(applied))}, extra {len(set(applied) - effect_ids)}"
        )
        runs = Counter(
            d["task_id"] for d in await db["executions"].find({}, {"task_id": 1}).to_list()
        )
        # Every effect ran at least once. A planned failure may have been spent
        # on an outage instead (the execution record itself not written), so
        # runs beyond 1 + planned failures are the redeliveries.
        assert all(runs[t] >= 1 for t in effect_ids)
        planned = {a.task_id: a.planned_failures for a in effects}
        extra = {t: runs[t] - 1 - planned[t] for t in effect_ids if runs[t] - 1 - planned[t] > 0}
        return {
            "accepted": len(self.accepted),
            "effectTasks": len(effects),
            "failOnPurpose": len(self.accepted) - len(effects),
            "completed": sum(1 for a in self.accepted if a.expect == "completed"),
            "failed": sum(1 for a in self.accepted if a.expect == "failed"),
            "effectsApplied": len(applied),
            "executions": sum(runs[t] for t in effect_ids),
            "plannedRetries": sum(planned.values()),
            "redeliveredTasks": len(extra),
            "redeliveredExecutions": sum(extra.values()),
        }


async def _states(db: AsyncDatabase[dict[str, Any]], ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        async for d in db["tasks"].find({"_id": {"$in": chunk}}, {"state": 1}):
            out[d["_id"]] = d["state"]
    return out


WALLET = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
IDENTICAL_SOL = 0.1


@dataclass
class PurchaseWorkload:
    """Token purchases through `POST /v1/buy-tokens` on the local chain.

    Invariants: every purchase the API accepted ends `completed`, or `failed`
    because its swap never landed; the contract received exactly the sum of the
    completed purchases' tokens; each has one transfer signature, and of every
    transfer ever signed for it only that one is on chain.
    """

    rpc_url: str
    contract_owner: str
    rate: float = 0.5
    name: str = "purchases"
    accepted: list[dict[str, Any]] = field(default_factory=list)
    swap_failed: int = 0
    before: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(13))

    async def _balances(self, mints: set[str]) -> dict[str, int]:
        from solders.pubkey import Pubkey
        from spl.token.instructions import get_associated_token_address

        from relayq.relayer.chain.rpc import SolanaRpc

        rpc = SolanaRpc(self.rpc_url)
        owner = Pubkey.from_string(self.contract_owner)
        try:
            return {
                m: await rpc.token_balance(
                    get_associated_token_address(owner, Pubkey.from_string(m))
                )
                for m in mints
            }
        finally:
            await rpc.close()

    async def submit(self, api: ApiClient, seconds: float) -> None:
        bundles = await api.get("/v1/bundles")
        mints = {t["mint"] for b in bundles["bundles"] for t in b["tokens"]}
        self.before = await self._balances(mints)
        total = max(1, int(self.rate * seconds))
        start = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i / self.rate - time.monotonic()))
            # Half of one identical amount: same-amount purchases in one blockhash
            # window must still each get a transfer of their own.
            sol = IDENTICAL_SOL if i % 2 == 0 else round(self.rng.uniform(0.01, 0.5), 3)
            body = {"wallet": WALLET, "solAmount": sol, "bundleId": "starter"}
            status, answer = await api.post("/v1/buy-tokens", body, accept=(200, 202))
            if status == 200:  # the swap failed or expired: nothing bought
                assert answer["status"] == "failed", answer
                self.swap_failed += 1
            else:
                self.accepted.append(answer)

        await asyncio.gather(*(one(i) for i in range(total)))

    async def pending(self, db: AsyncDatabase[dict[str, Any]]) -> int:
        states = await _states(db, [a["taskId"] for a in self.accepted])
        return sum(
            1 for a in self.accepted if states.get(a["taskId"]) not in ("completed", "failed")
        )

    async def verify(self, db: AsyncDatabase[dict[str, Any]]) -> dict[str, Any]:
        from solders.signature import Signature

        from relayq.relayer.chain.rpc import SolanaRpc

        ids = [a["taskId"] for a in self.accepted]
        assert len(set(ids)) == len(ids), "one accepted purchase, one task"
        tasks = {d["_id"]: d async for d in db["tasks"].find({"_id": {"$in": ids}})}
        purchases = {d["_id"]: d async for d in db["purchases"].find({"_id": {"$in": ids}})}
        done = [i for i in ids if tasks[i]["state"] == "completed"]
        failed = [i for i in ids if tasks[i]["state"] == "failed"]
        assert len(done) + len(failed) == len(ids)
        for i in failed:  # only a swap that never landed may fail a purchase
            assert purchases[i]["swap"]["state"] == "failed", (i, tasks[i]["last_error"])
            assert not purchases[i].get("transfer", {}).get("signature"), i
        expected: Counter[str] = Counter()
        for a in self.accepted:
            if a["taskId"] in done:
                for t in a["tokens"]:
                    expected[t["mint"]] += int(t["amount"])
        after = await self._balances(set(self.before))
        received = {m: after[m] - self.before[m] for m in self.before}
        assert received == {m: expected.get(m, 0) for m in self.before}, (received, expected)

        rpc = SolanaRpc(self.rpc_url)
        resigned = 0
        try:
            for i in done:
                transfer = purchases[i]["transfer"]
                sigs = transfer["signatures"]
                resigned += len(sigs) - 1
                states = await rpc.statuses([Signature.from_string(s) for s in sigs])
                landed = [s for s, st in zip(sigs, states, strict=True) if st is not None]
                assert landed == [transfer["signature"]], (i, landed, sigs)
        finally:
            await rpc.close()
        recorded = await db["user_purchases"].count_documents({"_id": {"$in": done}})
        assert recorded == len(done), "every completed purchase recorded once"
        return {
            "accepted": len(self.accepted),
            "completed": len(done),
            "swapFailed": len(failed) + self.swap_failed,
            "tokensReceivedByContract": dict(received),
            "transferSignatures": len(done),
            "transfersResigned": resigned,
        }
