"""Fault injection (`--faults`) and the Jito rate limit."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import aiohttp
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from tests.devchain.conftest import (
    VALIDITY_SLOTS,
    Chain,
    Http,
    blockhash,
    signed,
    sol_transfer,
    start_chain,
    wait_status,
)


def b64(tx: Transaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


async def tipped(devchain: Chain, client: AsyncClient, lamports: int) -> tuple[Transaction, str]:
    """A one-transaction bundle paying `lamports` to a fresh account; and that account."""
    dest = Keypair().pubkey()
    tx = signed(devchain.relayer, [
        sol_transfer(devchain.relayer, dest, lamports),
        sol_transfer(devchain.relayer, devchain.tips[2], 1000),
    ], await blockhash(client))  # fmt: skip
    return tx, str(dest)


async def status_of(http: Http, bid: str) -> str:
    return str(
        (await http.jito("getInflightBundleStatuses", [[bid]]))["result"]["value"][0]["status"]
    )


async def test_drop_transactions_answers_the_signature_but_never_executes(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    dest = Keypair().pubkey()
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 1_000_000)],
                await blockhash(client))  # fmt: skip
    dropped = (await http.state())["transactionsDropped"]
    assert (await http.faults(dropTransactions=1))["dropTransactions"] == 1
    assert (await client.send_raw_transaction(bytes(tx))).value == tx.signatures[0]
    await http.faults(advanceSlots=2)
    assert (await client.get_signature_statuses([tx.signatures[0]], True)).value == [None]
    assert (await client.get_balance(dest)).value == 0
    assert (await http.state())["transactionsDropped"] == dropped + 1
    # Never processed, so the same bytes can be sent again while the blockhash is valid.
    await wait_status(client, (await client.send_raw_transaction(bytes(tx))).value)
    assert (await client.get_balance(dest)).value == 1_000_000


async def test_dropped_bundle_stays_pending_then_becomes_invalid(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    tx, _ = await tipped(devchain, client, 2_000_000)
    await http.faults(dropBundles=1)
    bid = (await http.jito("sendBundle", [[b64(tx)], {"encoding": "base64"}]))["result"]
    await http.faults(advanceSlots=2)
    assert await status_of(http, bid) == "Pending"
    assert (await http.faults())["dropBundles"] == 0
    await http.faults(advanceSlots=VALIDITY_SLOTS)
    assert await status_of(http, bid) == "Invalid"
    assert (await client.get_signature_statuses([tx.signatures[0]], True)).value == [None]


async def test_failed_bundle_executes_nothing_and_can_be_sent_again(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    tx, dest = await tipped(devchain, client, 3_000_000)
    await http.faults(failBundles=1)
    bid = (await http.jito("sendBundle", [[b64(tx)], {"encoding": "base64"}]))["result"]
    await http.faults(advanceSlots=1)
    assert await status_of(http, bid) == "Failed"
    assert (await client.get_balance(Pubkey.from_string(dest))).value == 0
    assert (await client.get_signature_statuses([tx.signatures[0]], True)).value == [None]
    again = (await http.jito("sendBundle", [[b64(tx)], {"encoding": "base64"}]))["result"]
    assert again == bid
    await http.faults(advanceSlots=1)
    assert await status_of(http, bid) == "Landed"
    assert (await client.get_balance(Pubkey.from_string(dest))).value == 3_000_000


async def test_rpc_errors_answer_503_for_the_next_calls(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    await http.faults(rpcErrors=2)
    for _ in range(2):
        with pytest.raises(SolanaRpcException):
            await client.get_slot()
    assert (await client.get_slot()).value > 0
    # Restricted to some methods: others pass, and Jito methods can be named too.
    await http.faults(rpcErrors=2, methods=["getSignatureStatuses", "sendBundle"])
    assert (await client.get_slot()).value > 0
    with pytest.raises(SolanaRpcException):
        await client.get_signature_statuses([Keypair().sign_message(b"x")])
    status, body = await http.post("/api/v1/bundles", {"jsonrpc": "2.0", "id": 7,
                                   "method": "sendBundle", "params": [[]]})  # fmt: skip
    assert status == 503 and body["error"]["code"] == -32005 and body["id"] == 7
    assert (await http.faults())["rpcErrors"] == 0


async def test_rpc_delay_provokes_client_timeouts(devchain: Chain, http: Http) -> None:
    await http.faults(rpcDelayMs=600)
    async with AsyncClient(devchain.url, timeout=0.2) as impatient:
        with pytest.raises(SolanaRpcException):
            await impatient.get_slot()
    await http.faults(rpcDelayMs=0)
    async with AsyncClient(devchain.url, timeout=2) as patient:
        assert (await patient.get_slot()).value > 0


async def test_halt_and_advance_slots(client: AsyncClient, http: Http) -> None:
    halted = (await http.faults(haltSlots=True))["slot"]
    await asyncio.sleep(0.3)
    assert (await client.get_slot()).value == halted
    assert (await http.faults(advanceSlots=5))["slot"] == halted + 5
    await http.faults(haltSlots=False)
    await asyncio.sleep(0.3)
    assert (await client.get_slot()).value > halted + 5


async def test_malformed_fault_requests_are_400(http: Http) -> None:
    for body in ({"dropBundles": -1}, {"haltSlots": "yes"}, {"explode": 1}, [1],
                 {"rpcErrors": 1, "methods": "getSlot"}, {"advanceSlots": 10_001}):  # fmt: skip
        status, answer = await http.post("/devchain/faults", body)
        assert status == 400 and answer["error"] == "invalid-fault", body
    armed = await http.faults()
    assert armed["dropBundles"] == 0 and armed["haltSlots"] is False


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    chain = start_chain(tmp_path_factory.mktemp("limited"), slot_ms=50, jito_rate_limit=2)
    yield chain
    chain.server.stop()


async def test_jito_rate_limit_answers_429_and_faults_are_off_by_default(limited: Chain) -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "getTipAccounts", "params": []}
    async with aiohttp.ClientSession() as session:

        async def call() -> tuple[int, dict[str, object]]:
            async with session.post(limited.url + "/api/v1/bundles", json=request) as resp:
                return resp.status, await resp.json()

        # 2 per second: even if a loaded machine spreads 40 calls over seconds, most are refused.
        answers = await asyncio.gather(*(call() for _ in range(40)))
        codes = [s for s, _ in answers]
        assert codes.count(200) >= 2 and codes.count(429) >= 20, codes
        limited_body = next(b for s, b in answers if s == 429)
        assert limited_body["error"] == {"code": -32097, "message": "Rate limit exceeded"}
        await asyncio.sleep(1.0)  # the bucket refills
        assert (await call())[0] == 200
        async with session.post(limited.url + "/devchain/faults", json={}) as resp:
            assert resp.status == 404
        async with session.get(limited.url + "/devchain/state") as resp:
            assert (await resp.json())["rateLimited"] == codes.count(429)
    async with AsyncClient(limited.url) as client:  # the Solana RPC is not limited
        for _ in range(20):
            assert (await client.get_slot()).value > 0
