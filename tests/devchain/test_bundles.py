"""The Jito bundle API: tips, atomic landing, statuses, and the relayer's local swap."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.transaction import Transaction

from tests.devchain.conftest import (
    Chain,
    Http,
    blockhash,
    signed,
    sol_transfer,
    token_balance,
    token_transfer,
    wait_status,
)


def b64(tx: Transaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


async def send_bundle(http: Http, txs: list[Transaction]) -> dict[str, Any]:
    return dict(await http.jito("sendBundle", [[b64(t) for t in txs], {"encoding": "base64"}]))


async def inflight(http: Http, bundle_id: str) -> dict[str, Any]:
    body = await http.jito("getInflightBundleStatuses", [[bundle_id]])
    assert body["result"]["context"]["slot"] > 0
    return dict(body["result"]["value"][0])


async def test_tip_accounts_are_the_manifest_ones(devchain: Chain, http: Http) -> None:
    body = await http.jito("getTipAccounts", [])
    assert body["result"] == devchain.manifest["tipAccounts"]


async def test_tipped_bundle_goes_pending_then_landed(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    dest = Keypair().pubkey()
    recent = await blockhash(client)
    pay = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 3_000_000)], recent)
    tip = signed(devchain.relayer, [sol_transfer(devchain.relayer, devchain.tips[3], 1000)], recent)
    await http.faults(haltSlots=True)
    body = await send_bundle(http, [pay, tip])
    bid = body["result"]
    joined = ",".join(str(t.signatures[0]) for t in (pay, tip))
    assert bid == hashlib.sha256(joined.encode()).hexdigest()
    assert await inflight(http, bid) == {"bundle_id": bid, "status": "Pending", "landed_slot": None}
    assert (await http.jito("getBundleStatuses", [[bid]]))["result"]["value"] == [None]
    assert (await client.get_balance(dest)).value == 0, "bundles land at the next slot, not at once"
    slot = (await http.faults(advanceSlots=1))["slot"]
    assert await inflight(http, bid) == {"bundle_id": bid, "status": "Landed", "landed_slot": slot}
    statuses = (await http.jito("getBundleStatuses", [[bid]]))["result"]
    assert statuses["context"]["slot"] == slot
    assert statuses["value"] == [{
        "bundle_id": bid,
        "transactions": [str(pay.signatures[0]), str(tip.signatures[0])],
        "slot": slot,
        "confirmation_status": "processed",
        "err": {"Ok": None},
    }]  # fmt: skip
    assert (await client.get_balance(dest)).value == 3_000_000
    await http.faults(advanceSlots=1)
    later = (await http.jito("getBundleStatuses", [[bid]]))["result"]["value"][0]
    assert later["confirmation_status"] == "confirmed"
    # The same bundle again: same id, no second effect.
    assert (await send_bundle(http, [pay, tip]))["result"] == bid
    await http.faults(advanceSlots=1)
    assert (await client.get_balance(dest)).value == 3_000_000


async def test_bundle_whose_second_transaction_fails_leaves_nothing(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    m = devchain.mint("RLQB")
    dest = Keypair().pubkey()
    relayer_before = (await client.get_balance(devchain.relayer.pubkey())).value
    tokens_before = await token_balance(client, m["relayerAccount"])
    recent = await blockhash(client)
    first = signed(devchain.treasury, [
        token_transfer(devchain, "RLQB", m["treasuryAccount"], m["relayerAccount"],
                       devchain.treasury, 7_000_000),
        sol_transfer(devchain.treasury, devchain.tips[0], 5000),
        sol_transfer(devchain.treasury, dest, 2_000_000),
    ], recent)  # fmt: skip
    # The relayer has ~1000 SOL: moving 10^6 SOL fails inside the program.
    second = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 10**15)], recent)
    treasury_before = (await client.get_balance(devchain.treasury.pubkey())).value
    bid = (await send_bundle(http, [first, second]))["result"]
    await http.faults(advanceSlots=1)
    assert await inflight(http, bid) == {"bundle_id": bid, "status": "Failed", "landed_slot": None}
    assert (await http.jito("getBundleStatuses", [[bid]]))["result"]["value"] == [None]
    assert await token_balance(client, m["relayerAccount"]) == tokens_before
    assert (await client.get_balance(devchain.treasury.pubkey())).value == treasury_before
    assert (await client.get_balance(devchain.relayer.pubkey())).value == relayer_before
    assert (await client.get_balance(dest)).value == 0
    statuses = (await client.get_signature_statuses([first.signatures[0]], True)).value
    assert statuses == [None]
    # Not landed means not processed: the first transaction alone still goes through.
    await wait_status(client, (await client.send_raw_transaction(bytes(first))).value)
    assert await token_balance(client, m["relayerAccount"]) == tokens_before + 7_000_000


async def test_bundle_without_enough_tip_is_refused(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    received = (await http.state())["bundlesReceived"]
    recent = await blockhash(client)
    plain = signed(
        devchain.relayer, [sol_transfer(devchain.relayer, Keypair().pubkey(), 10**6)], recent
    )
    refused = await send_bundle(http, [plain])
    assert refused["error"]["code"] == -32602
    assert "tip account" in refused["error"]["message"]
    stingy = signed(
        devchain.relayer, [sol_transfer(devchain.relayer, devchain.tips[1], 999)], recent
    )
    low = await send_bundle(http, [plain, stingy])
    assert low["error"]["code"] == -32602 and "1000" in low["error"]["message"]
    assert (await http.state())["bundlesReceived"] == received


async def test_bundle_size_and_encoding_are_checked(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    recent = await blockhash(client)
    txs = [
        signed(
            devchain.relayer,
            [sol_transfer(devchain.relayer, devchain.tips[i % 8], 1000 + i)],
            recent,
        )
        for i in range(6)
    ]
    six = await send_bundle(http, txs)
    assert six["error"]["code"] == -32602 and "5" in six["error"]["message"]
    assert (await send_bundle(http, []))["error"]["code"] == -32602
    garbage = await http.jito("sendBundle", [["not base58 0OIl"]])
    assert garbage["error"]["code"] == -32602
    from relayq.devchain.codec import b58encode

    # base58 is the default encoding, as on the block engine.
    ok = await http.jito("sendBundle", [[b58encode(bytes(txs[0]))]])
    assert len(ok["result"]) == 64
    too_many_ids = await http.jito("getInflightBundleStatuses", [["a"] * 6])
    assert too_many_ids["error"]["code"] == -32602
    unknown = await inflight(http, "ff" * 32)
    assert unknown == {"bundle_id": "ff" * 32, "status": "Invalid", "landed_slot": None}
    assert (await http.jito("nope", []))["error"]["code"] == -32601


async def test_local_swap_lands_atomically_as_one_bundle(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    """SOL to the treasury, tokens to the relayer and the tip, in one transaction."""
    m = devchain.mint("RLQC")
    relayer, treasury = devchain.relayer, devchain.treasury
    sol_before = (await client.get_balance(treasury.pubkey())).value
    tokens_before = await token_balance(client, m["relayerAccount"])
    tip_before = (await client.get_balance(devchain.tips[5])).value
    swap = signed(relayer, [
        sol_transfer(relayer, treasury.pubkey(), 250_000_000),
        token_transfer(devchain, "RLQC", m["treasuryAccount"], m["relayerAccount"], treasury,
                       42_000_000),
        sol_transfer(relayer, devchain.tips[5], 10_000),
    ], await blockhash(client), treasury)  # fmt: skip
    bid = (await send_bundle(http, [swap]))["result"]
    status = await wait_status(client, swap.signatures[0])
    assert status.err is None
    assert (await inflight(http, bid))["status"] == "Landed"
    assert (await client.get_balance(treasury.pubkey())).value == sol_before + 250_000_000
    assert await token_balance(client, m["relayerAccount"]) == tokens_before + 42_000_000
    assert (await client.get_balance(devchain.tips[5])).value == tip_before + 10_000
