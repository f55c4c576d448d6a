"""Many purchases at once, as the relayer's suite sends them: one swap bundle, one
transfer to the contract and status polls each. Bounded, on loopback."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from solana.rpc.async_api import AsyncClient
from solders.signature import Signature

from tests.devchain.conftest import (
    SLOT_MS,
    Chain,
    Http,
    blockhash,
    signed,
    sol_transfer,
    token_balance,
    token_transfer,
)

PURCHASES = 200


async def _until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(SLOT_MS / 1000)


@pytest.mark.slow
async def test_two_hundred_concurrent_purchases_all_land(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    m = devchain.mint("RLQA")
    contract_ata = devchain.manifest["contract"]["tokenAccounts"][m["mint"]]
    relayer, treasury = devchain.relayer, devchain.treasury
    before = await token_balance(client, contract_ata)
    state_before = await http.state()

    async def purchase(i: int) -> None:
        amount = 1_000 + i
        swap = signed(relayer, [
            sol_transfer(relayer, treasury.pubkey(), 1_000_000 + i),
            token_transfer(devchain, "RLQA", m["treasuryAccount"], m["relayerAccount"], treasury,
                           amount),
            sol_transfer(relayer, devchain.tips[i % 8], 1_000),
        ], await blockhash(client), treasury)  # fmt: skip
        sent = await http.jito("sendBundle", [[base64.b64encode(bytes(swap)).decode()],
                                              {"encoding": "base64"}])  # fmt: skip
        bid = sent["result"]

        async def landed() -> bool:
            body = await http.jito("getInflightBundleStatuses", [[bid]])
            status = body["result"]["value"][0]["status"]
            if status not in ("Pending", "Landed"):
                async with http.session.get(f"{http.url}/devchain/bundles/{bid}") as resp:
                    raise AssertionError(await resp.text())
            return bool(status == "Landed")

        await _until(landed)
        pay = signed(relayer, [token_transfer(
            devchain, "RLQA", m["relayerAccount"], contract_ata, relayer, amount
        )], await blockhash(client))  # fmt: skip
        sig: Signature = (await client.send_raw_transaction(bytes(pay))).value

        async def confirmed() -> bool:
            status = (await client.get_signature_statuses([sig])).value[0]
            return status is not None and status.err is None

        await _until(confirmed)

    started = time.monotonic()
    await asyncio.gather(*(purchase(i) for i in range(PURCHASES)))
    elapsed = time.monotonic() - started
    expected = sum(1_000 + i for i in range(PURCHASES))
    assert await token_balance(client, contract_ata) == before + expected
    state = await http.state()
    assert state["bundlesLanded"] - state_before["bundlesLanded"] == PURCHASES
    assert state["transactionsSucceeded"] - state_before["transactionsSucceeded"] == 2 * PURCHASES
    print(f"{PURCHASES} purchases in {elapsed:.2f}s", state)
