"""Property: whatever interleaving of crashes, RPC faults and slot advances, at most one
transfer lands per purchase, and the purchase's record says what the chain says.

Each example is a fresh purchase whose swap landed, and a schedule drawn by
hypothesis, run against the real transfer handler (`relayq.relayer.jobs.
token_transfer`), the local chain, Redis and MongoDB; nothing is a model. Slot
production is halted, so the chain moves only when the schedule says
(`haltSlots`, `advanceSlots`). A schedule is a list of rounds; in each:

- a fault may be armed: the RPC answers JSON-RPC errors to a method (HTTP 503
  or inside a 200), drops sent transactions (their status stays null), answers
  statuses as a node behind (`statusLagSlots`), or as one without history;
- a fresh run of the handler may start, from the records alone, as a new
  worker takes the task over once the last one's lease expired. Its steps are
  counted: each failpoint of the transfer (`relayq.core.failpoints.trapped`),
  each RPC request and each RPC answer (received, not yet read). At a drawn
  step the run crashes (raises `Crash`, which no code under test catches, as
  nothing runs after a SIGKILL) or stalls: a stale run, holding what it read,
  which a later round wakes, after fresh runs and slots went by;
- the chain may produce slots: a few, about the finality lag, or past a
  blockhash's expiry at finalized (so transfers are signed anew, up to a drawn
  cap of signings, then parked).

Then faults are turned off, the stalled run wakes, and runs go on, with slots
advancing, until the handler is done or parks the task. The chain is then read
directly (plain JSON-RPC, no relayer code): of the transactions carrying the
purchase's memo into the contract's token account, at most one landed; if one
did, the record is `confirmed` with exactly that signature, the task ends
`completed` on a real worker, and the contract received exactly the amount; if
none did, the record is not `confirmed`, the task is parked (`needs_review`),
never `failed`, and the contract received nothing.

`RELAYQ_PROPERTY_EXAMPLES` sets the number of examples (default 120, about 20 s);
a soak: `RELAYQ_PROPERTY_EXAMPLES=2000 make test
PYTEST_ARGS="tests/relayer/test_transfer_property.py --hypothesis-show-statistics"`.
A failing example is printed by hypothesis: its schedule, and the steps each run
took and how it ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import httpx2
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from relayq.core.clients import Clients
from relayq.core.failpoints import trapped
from relayq.core.jobs import Defer, JobContext, NeedsReview, Task, TaskState
from relayq.core.modules import ProcessContext
from relayq.core.priorities import Priority
from relayq.relayer import jobs as relayer_jobs
from relayq.relayer.chain.errors import ChainError
from relayq.relayer.chain.keys import load_keypair
from relayq.relayer.chain.settings import ChainSettings
from relayq.relayer.memo import PREFIX
from relayq.relayer.purchases import TransferState
from relayq.relayer.relayer import Relayer
from tests.conftest import InProcessWorker, wait_until
from tests.relayer.conftest import FINALITY_LAG, VALIDITY_SLOTS, Devchain
from tests.relayer.test_funds_safety import paid_purchase
from tests.relayer.test_reconcile import treasury_pays

EXAMPLES = int(os.environ.get("RELAYQ_PROPERTY_EXAMPLES", "120"))
# Slots after which every blockhash of a signing has expired at finalized, with margin.
PAST_EXPIRY = VALIDITY_SLOTS + FINALITY_LAG + 2
# Rounds of the last phase before the test calls the transfer stuck.
CONCLUDE_ROUNDS = 30
METHODS = [
    "getSignatureStatuses",
    "getEpochInfo",
    "getLatestBlockhash",
    "sendTransaction",
    "getTokenAccountBalance",
]


class Crash(BaseException):
    """The run's process died here. A BaseException: nothing under test handles it."""


# -- the schedule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """One round of a schedule, in this order: arm `fault` (a body of POST /devchain/faults);
    unless `run` is False, start a fresh run that stops at its step `stop_at` (None: never),
    crashing there or, with `pause`, stalling; produce `slots` slots; with `wake`, let the
    stalled run go on."""

    fault: dict[str, Any] | None
    run: bool
    stop_at: int | None
    pause: bool
    slots: int
    wake: bool


drops = st.fixed_dictionaries({"dropTransactions": st.integers(1, 3)})
# A node behind by a few slots, by the finality lag, or by more than a blockhash's life
# (it has not seen a transfer land before the expiry).
lags = st.fixed_dictionaries(
    {
        "statusLagSlots": st.sampled_from([0, 1, 2, FINALITY_LAG + 1])
        | st.integers(PAST_EXPIRY, PAST_EXPIRY + 60)
    }
)
faults = (
    drops
    | drops
    | lags
    | lags
    | st.fixed_dictionaries(
        {
            "rpcErrors": st.integers(1, 6),
            "methods": st.lists(st.sampled_from(METHODS), min_size=1, max_size=1),
            "rpcErrorStatus": st.sampled_from([200, 503]),
        }
    )
    | st.fixed_dictionaries({"historyOff": st.booleans()})
)
slots = (
    st.just(0)
    | st.integers(1, 3)
    | st.integers(FINALITY_LAG - 1, FINALITY_LAG + 1)
    | st.integers(PAST_EXPIRY - 4, PAST_EXPIRY + 4)
)
rounds = st.builds(
    Round,
    fault=st.none() | faults,
    run=st.booleans() | st.just(True),
    # A first run takes 11 steps (balance, blockhash, sign, persist, send, status); later
    # ones fewer.
    stop_at=st.none() | st.integers(0, 10) | st.integers(0, 10),
    pause=st.booleans(),
    slots=slots,
    wake=st.booleans(),
)
schedules = st.lists(rounds, min_size=1, max_size=8)
amounts = st.integers(1, 10**6)
# Signings before the task is parked (RELAYQ_TRANSFER_MAX_SIGNINGS, 3 by default).
caps = st.integers(1, 3)


# -- one run, and where it stops ---------------------------------------------------------------


@dataclass
class Probe:
    """One run's steps (failpoints, RPC requests and answers), and where it stops."""

    name: str
    stop_at: int | None
    pause: bool
    steps: list[str] = field(default_factory=list)
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def _reached(self, step: str) -> bool:
        self.steps.append(step)
        return self.stop_at is not None and len(self.steps) > self.stop_at

    def at_failpoint(self, name: str) -> None:
        # A failpoint is not awaited: a run meant to pause there pauses at its next RPC step.
        if self._reached(name) and not self.pause:
            raise Crash(name)

    async def at_rpc(self, step: str) -> None:
        if not self._reached(step):
            return
        if not self.pause:
            raise Crash(step)
        if not self.paused.is_set():
            self.paused.set()
            await self.woken.wait()


PROBE: ContextVar[Probe | None] = ContextVar("transfer_property_probe", default=None)


def _method(request: httpx2.Request) -> str:
    try:
        return str(json.loads(request.content)["method"])
    except (ValueError, KeyError, TypeError):
        return "?"


async def _on_request(request: httpx2.Request) -> None:
    probe = PROBE.get()
    if probe is not None:
        await probe.at_rpc(f"request {_method(request)}")


async def _on_response(response: httpx2.Response) -> None:
    probe = PROBE.get()
    if probe is not None:
        await probe.at_rpc(f"answer {_method(response.request)}")


async def handler_run(relayer: Relayer, process: ProcessContext, task: Task, probe: Probe) -> str:
    """The real token_transfer handler, once, as a worker runs it; what it ended with."""
    PROBE.set(probe)  # this run's task only: it runs in a context of its own
    ctx = JobContext(
        task_id=task.id,
        attempt=1,
        priority=Priority.HIGH,
        log=logging.LoggerAdapter(logging.getLogger("transfer-property")),
        process=process,
    )
    try:
        with trapped(probe.at_failpoint):
            await relayer_jobs.token_transfer({}, ctx)
    except Crash as exc:
        return f"crashed at {exc}"
    except Defer as exc:
        return f"deferred: {exc}"
    except NeedsReview as exc:
        return f"parked: {exc.reason}"
    except ChainError as exc:
        return f"chain error, retried later: {type(exc).__name__}"
    return "done"


# -- the chain, read without the relayer's code ------------------------------------------------


async def rpc(chain: Devchain, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with aiohttp.ClientSession() as s, s.post(chain.url, json=body) as resp:
        answer = await resp.json()
    assert "error" not in answer, answer
    return answer["result"]


async def newest_signature(chain: Devchain, account: Pubkey) -> str | None:
    found = await rpc(chain, "getSignaturesForAddress", [str(account), {"limit": 1}])
    return found[0]["signature"] if found else None


async def landed_transfers(
    chain: Devchain, account: Pubkey, purchase_id: str, since: str | None
) -> list[str]:
    """Signatures of the successful transactions into `account` that carry the purchase's
    memo, at finalized, newer than `since`."""
    config: dict[str, Any] = {"limit": 1000, "commitment": "finalized"}
    if since is not None:
        config["until"] = since
    entries = await rpc(chain, "getSignaturesForAddress", [str(account), config])
    memo = PREFIX + purchase_id
    return [e["signature"] for e in entries if e["err"] is None and memo in (e["memo"] or "")]


async def balance(chain: Devchain, account: Pubkey) -> int:
    answer = await rpc(chain, "getTokenAccountBalance", [str(account), {"commitment": "finalized"}])
    return int(answer["value"]["amount"])


# -- fixtures shared by every example ---------------------------------------------------------


@pytest.fixture
async def held_chain(chain: Devchain) -> AsyncIterator[Devchain]:
    """The chain, producing slots only when a step says so."""
    await chain.faults(reset=True, haltSlots=True)
    yield chain
    await chain.faults(reset=True, haltSlots=False)


@pytest.fixture
async def stocked(relayer: Relayer, chain_settings: ChainSettings, held_chain: Devchain) -> Relayer:
    """The relayer holding enough of the basket's token, its RPC steps observable per run,
    and a run waiting for no confirmation (the schedule decides when slots come)."""
    token = relayer.baskets["single"].tokens[0]
    treasury = load_keypair(chain_settings.treasury_keypair_file)
    await treasury_pays(
        relayer, treasury, token.mint, relayer.allowlist.relayer_account(token.mint), 10**12
    )
    await held_chain.faults(advanceSlots=FINALITY_LAG + 1)
    # solana-py's HTTP client (httpx2): its event hooks see each request and each answer.
    session = relayer.rpc.client._provider.session
    session.event_hooks["request"].append(_on_request)
    session.event_hooks["response"].append(_on_response)
    relayer.chain = replace(relayer.chain, confirm_wait_seconds=0.0)
    return relayer


@pytest.fixture
async def worker(clients: Clients, process: ProcessContext) -> AsyncIterator[InProcessWorker]:
    async with InProcessWorker(clients, "high", process=process) as w:
        yield w


# -- the property ------------------------------------------------------------------------------


# Finding a failure, then shrinking it (hypothesis gives up shrinking after 300 s).
@pytest.mark.timeout(360 + 3 * EXAMPLES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules, amount=amounts, cap=caps)
async def test_at_most_one_transfer_lands_and_the_record_matches_the_chain(
    schedule: list[Round],
    amount: int,
    cap: int,
    clients: Clients,
    stocked: Relayer,
    held_chain: Devchain,
    process: ProcessContext,
    worker: InProcessWorker,
) -> None:
    relayer, chain = stocked, held_chain
    note(f"schedule={schedule!r}, amount={amount}, cap={cap}")
    relayer.chain = replace(relayer.chain, transfer_max_signings=cap)
    await chain.faults(reset=True, haltSlots=True)
    task = await paid_purchase(clients, relayer, amount=amount)
    account = relayer.allowlist.contract_account(relayer.baskets["single"].tokens[0].mint)
    since = await newest_signature(chain, account)
    before = await balance(chain, account)
    outcomes = await play(relayer, process, chain, task, schedule)
    note("runs: " + "\n  ".join(outcomes))

    # Everything that could ever land has landed or expired, and is final.
    await chain.faults(advanceSlots=PAST_EXPIRY)
    landed = await landed_transfers(chain, account, task.id, since)
    purchase = await relayer.purchases.get(task.id)
    assert purchase is not None
    record = purchase.transfer
    note(f"landed: {landed}; record: { {k: v for k, v in record.items() if k != 'transaction'} }")
    assert len(landed) <= 1, f"{len(landed)} transfers landed for one purchase: {landed}"
    assert record.get("state") != TransferState.FAILED.value  # no transaction failed on chain

    await clients.service.dispatch_pending([task])
    ended = await wait_until(lambda: ended_task(clients, task.id), timeout=20)
    assert ended.state is not TaskState.FAILED
    delta = await balance(chain, account) - before
    event(f"signings: {len(record.get('signatures', []))}")
    event(f"ended: {ended.state.value}")
    event(f"runs stalled then woken: {sum('paused after' in o for o in outcomes)}")
    event(f"runs crashed: {sum('crashed at' in o for o in outcomes)}")
    if landed:
        assert record.get("state") == TransferState.CONFIRMED.value, record
        assert record["signature"] == landed[0]
        assert landed[0] in record["signatures"]
        assert ended.state is TaskState.COMPLETED, ended
        assert ended.result == {"transferSignature": landed[0], "slot": record["slot"]}
        assert delta == amount
    else:
        assert record.get("state") != TransferState.CONFIRMED.value, record
        assert ended.state is TaskState.NEEDS_REVIEW, ended
        assert ended.review is not None and ended.review["reason"] == "signing-cap", ended
        assert delta == 0


async def ended_task(clients: Clients, task_id: str) -> Task | None:
    task = await clients.store.get(task_id)
    ends = (TaskState.COMPLETED, TaskState.NEEDS_REVIEW, TaskState.FAILED)
    return task if task is not None and task.state in ends else None


async def play(
    relayer: Relayer, process: ProcessContext, chain: Devchain, task: Task, schedule: list[Round]
) -> list[str]:
    """Run the schedule, then bring the transfer to a conclusion with every fault off;
    returns what each run did and ended with."""
    outcomes: list[str] = []
    stale: tuple[Probe, asyncio.Task[str]] | None = None
    parked = False
    count = 0

    async def start(stop_at: int | None, pause: bool) -> str | None:
        """A fresh run; what it ended with, or None when it paused (a stale run now)."""
        nonlocal stale, count
        count += 1
        probe = Probe(f"run {count}", stop_at, pause)
        run = asyncio.create_task(handler_run(relayer, process, task, probe))
        paused = asyncio.create_task(probe.paused.wait())
        await asyncio.wait({run, paused}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        paused.cancel()
        if not run.done():
            assert probe.paused.is_set(), f"{probe.name} neither ended nor paused: {probe.steps}"
            stale = (probe, run)
            outcomes.append(f"{probe.name} paused after {probe.steps}")
            return None
        return finished(probe, run.result())

    def finished(probe: Probe, outcome: str) -> str:
        nonlocal parked
        parked = parked or outcome.startswith("parked")
        outcomes.append(f"{probe.name}: {outcome}; steps {probe.steps}")
        return outcome

    async def wake() -> None:
        nonlocal stale
        if stale is None:
            return
        probe, run = stale
        stale = None
        probe.woken.set()
        finished(probe, await asyncio.wait_for(run, 60))

    for round_ in schedule:
        if round_.fault is not None:
            await chain.faults(**round_.fault)
        # A parked task is run by nobody until an operator says so.
        if round_.run and not parked:
            await start(round_.stop_at, round_.pause and stale is None)
        if round_.slots:
            await chain.faults(advanceSlots=round_.slots)
        if round_.wake:
            await wake()

    await chain.faults(reset=True, haltSlots=True)
    await wake()
    for n in range(CONCLUDE_ROUNDS):
        if parked or await start(None, False) == "done":
            return outcomes
        # Waiting on the chain: let it move, further each round (to expiry within ~8 rounds).
        await chain.faults(advanceSlots=min(2**n, 64))
    raise AssertionError(f"no conclusion after {CONCLUDE_ROUNDS} rounds:\n" + "\n".join(outcomes))
