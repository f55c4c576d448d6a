"""Every refusal answers the JSON-RPC error a validator or the block engine answers."""

from __future__ import annotations

import base64

from solana.rpc.async_api import AsyncClient
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from tests.devchain.conftest import VALIDITY_SLOTS, Chain, Http, blockhash, signed, sol_transfer


async def code(http: Http, method: str, params: list[object], path: str = "/") -> int:
    body = await http.rpc(method, params, path)
    assert "error" in body, body
    return int(body["error"]["code"])


async def test_invalid_params_of_read_methods(devchain: Chain, http: Http) -> None:
    key = str(devchain.relayer.pubkey())
    mint = devchain.mint("RLQA")
    assert await code(http, "getMultipleAccounts", [[key] * 101]) == -32602
    assert await code(http, "getSignatureStatuses", [[str(Signature.default())] * 257]) == -32602
    assert await code(http, "getSignatureStatuses", [["nope"]]) == -32602
    assert await code(http, "getTokenAccountsByOwner", [key, {"owner": key}]) == -32602
    assert await code(http, "getTokenAccountsByOwner", [key, {"programId": key}]) == -32602
    assert await code(http, "getAccountInfo", [key, {"encoding": "base64+zstd"}]) == -32602
    big = mint["treasuryAccount"]  # 165 bytes: too long for base58, as on a validator
    assert await code(http, "getAccountInfo", [big, {"encoding": "base58"}]) == -32602
    assert await code(http, "getAccountInfo", [key, 7]) == -32602
    assert await code(http, "isBlockhashValid", ["not a hash"]) == -32602
    assert await code(http, "getMinimumBalanceForRentExemption", [-1]) == -32602
    assert await code(http, "getFeeForMessage", ["%%%"]) == -32602
    assert await code(http, "getTokenSupply", [key]) == -32602
    assert await code(http, "requestAirdrop", [key, 0]) == -32602
    status, body = await http.post("/", {"jsonrpc": "2.0", "id": 1, "method": "getSlot",
                                         "params": {"a": 1}})  # fmt: skip
    assert status == 200 and body["error"]["code"] == -32602
    short = await http.rpc("getAccountInfo", [str(Pubkey.default()), {"encoding": "base58"}])
    assert short["result"]["value"] is None or short["result"]["value"]["data"][1] == "base58"


async def test_fee_for_message(devchain: Chain, client: AsyncClient, http: Http) -> None:
    msg = Message.new_with_blockhash(
        [sol_transfer(devchain.relayer, Keypair().pubkey(), 1)],
        devchain.relayer.pubkey(),
        await blockhash(client),
    )
    assert (await client.get_fee_for_message(msg)).value == 5000
    assert (await http.rpc("getRecentPrioritizationFees", []))["result"] == []


async def test_invalid_transactions(devchain: Chain, client: AsyncClient, http: Http) -> None:
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, Keypair().pubkey(), 10**6)],
                await blockhash(client))  # fmt: skip
    unsigned = VersionedTransaction.populate(tx.message, [])
    raw = base64.b64encode(bytes(unsigned)).decode()
    assert await code(http, "sendTransaction", [raw, {"encoding": "base64"}]) == -32602
    assert await code(http, "sendTransaction", [raw, {"encoding": "hex"}]) == -32602
    b64 = base64.b64encode(bytes(tx)).decode()
    conflict = [b64, {"encoding": "base64", "sigVerify": True, "replaceRecentBlockhash": True}]
    assert await code(http, "simulateTransaction", conflict) == -32602
    # A bad signature fails simulation only when asked to verify.
    raw_bad = bytearray(bytes(tx))
    raw_bad[10] ^= 0xFF
    bad = base64.b64encode(bytes(raw_bad)).decode()
    checked = await http.rpc(
        "simulateTransaction", [bad, {"encoding": "base64", "sigVerify": True}]
    )
    assert checked["result"]["value"]["err"] == "SignatureFailure"
    lax = await http.rpc("simulateTransaction", [bad, {"encoding": "base64"}])
    assert lax["result"]["value"]["err"] is None
    # skipPreflight with a bad signature: forwarded, then dropped by the leader.
    sig = await http.rpc("sendTransaction", [bad, {"encoding": "base64", "skipPreflight": True}])
    await http.faults(advanceSlots=1)
    assert (await client.get_signature_statuses([Signature.from_string(sig["result"])])).value == [
        None
    ]


async def test_bundle_refusals_and_failures(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    recent = await blockhash(client)
    tip = sol_transfer(devchain.relayer, devchain.tips[0], 1000)
    looked_up = Keypair().pubkey()
    table = AddressLookupTableAccount(Pubkey.new_unique(), [looked_up])
    pay = sol_transfer(devchain.relayer, looked_up, 10**6)
    with_lookup = VersionedTransaction(
        MessageV0.try_compile(devchain.relayer.pubkey(), [pay, tip], [table], recent),
        [devchain.relayer],
    )
    assert with_lookup.message.address_table_lookups
    refs = [base64.b64encode(bytes(with_lookup)).decode()]
    assert (
        await code(http, "sendBundle", [refs, {"encoding": "base64"}], "/api/v1/bundles") == -32602
    )
    assert await code(http, "sendBundle", ["x"], "/api/v1/bundles") == -32602
    assert await code(http, "getBundleStatuses", [[]], "/api/v1/bundles") == -32602
    assert await code(http, "getBundleStatuses", ["id"], "/api/v1/bundles") == -32602
    async with http.session.post(http.url + "/api/v1/bundles", data=b"[") as resp:
        assert (await resp.json())["error"]["code"] == -32700
    async with http.session.get(f"{http.url}/devchain/bundles/{'00' * 32}") as resp:
        assert resp.status == 404

    # A transaction processed already makes the whole bundle fail when it lands.
    done = signed(devchain.relayer, [tip], recent)
    await client.send_raw_transaction(bytes(done))
    other = signed(devchain.relayer, [sol_transfer(devchain.relayer, Keypair().pubkey(), 10**6)],
                   recent)  # fmt: skip
    dup = [base64.b64encode(bytes(t)).decode() for t in (other, done)]
    bid = (await http.jito("sendBundle", [dup, {"encoding": "base64"}]))["result"]
    # A bundle signed over an expired blockhash is accepted, then fails when it lands.
    old = await blockhash(client)
    await http.faults(advanceSlots=VALIDITY_SLOTS + 1)
    late = signed(devchain.relayer, [sol_transfer(devchain.relayer, devchain.tips[1], 2000)], old)
    late_id = (await http.jito("sendBundle", [[base64.b64encode(bytes(late)).decode()],
                                              {"encoding": "base64"}]))["result"]  # fmt: skip
    await http.faults(advanceSlots=1)
    for bundle_id, err in ((bid, {"index": 1, "err": "AlreadyProcessed"}),
                           (late_id, {"index": 0, "err": "BlockhashNotFound"})):  # fmt: skip
        async with http.session.get(f"{http.url}/devchain/bundles/{bundle_id}") as resp:
            detail = await resp.json()
        assert detail["status"] == "Failed" and detail["error"] == err, detail
    assert (await client.get_signature_statuses([other.signatures[0]], True)).value == [None]
