"""Commitment views: processed, confirmed and finalized differ, as on a cluster.

The finalized view lags the newest slot by `--finality-lag` slots; reads that
name a commitment answer from that view, with its slot as `context.slot`.
"""

from __future__ import annotations

import base64

from solders.hash import Hash
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import Transaction

from tests.devchain.conftest import Chain, Http, signed, sol_transfer

FINALITY_LAG = 32  # the devchain's default


async def value(http: Http, method: str, params: list[object]) -> object:
    body = await http.rpc(method, params)
    assert "result" in body, body
    return body["result"]


async def height(http: Http, commitment: str) -> int:
    result = await value(http, "getBlockHeight", [{"commitment": commitment}])
    assert isinstance(result, int)
    return result


async def test_block_height_and_slot_lag_by_commitment(http: Http) -> None:
    await http.faults(haltSlots=True, advanceSlots=FINALITY_LAG + 5)
    try:
        processed = await height(http, "processed")
        assert await height(http, "confirmed") == processed - 1
        assert await height(http, "finalized") == processed - FINALITY_LAG
        assert await value(http, "getSlot", [{"commitment": "finalized"}]) == (
            processed - FINALITY_LAG
        )
        info = await value(http, "getEpochInfo", [{"commitment": "finalized"}])
        assert isinstance(info, dict) and info["blockHeight"] == processed - FINALITY_LAG
        # A validator's default is finalized.
        assert await value(http, "getBlockHeight", []) == processed - FINALITY_LAG
        bad = await http.rpc("getBlockHeight", [{"commitment": "soon"}])
        assert bad["error"]["code"] == -32602
    finally:
        await http.faults(haltSlots=False)


async def test_accounts_and_blockhashes_are_read_at_their_view(devchain: Chain, http: Http) -> None:
    await http.faults(haltSlots=True)
    try:
        dest = Keypair().pubkey()
        newest = await value(http, "getLatestBlockhash", [{"commitment": "processed"}])
        assert isinstance(newest, dict)
        tx = signed(devchain.treasury, [sol_transfer(devchain.treasury, dest, 2_000_000)],
                    Hash.from_string(newest["value"]["blockhash"]))  # fmt: skip
        raw = base64.b64encode(bytes(tx)).decode()
        await value(http, "sendTransaction", [raw, {"encoding": "base64", "skipPreflight": True}])

        async def balance(commitment: str) -> tuple[int, int]:
            body = await value(http, "getBalance", [str(dest), {"commitment": commitment}])
            assert isinstance(body, dict)
            return body["value"], body["context"]["slot"]

        slot = (await http.state())["slot"]
        assert await balance("processed") == (2_000_000, slot)
        assert await balance("confirmed") == (0, slot - 1)
        await http.faults(advanceSlots=1)
        assert (await balance("confirmed"))[0] == 2_000_000
        assert (await balance("finalized"))[0] == 0
        await http.faults(advanceSlots=FINALITY_LAG - 1)
        assert (await balance("finalized"))[0] == 2_000_000

        final = await value(http, "getLatestBlockhash", [{"commitment": "finalized"}])
        latest = await value(http, "getLatestBlockhash", [{"commitment": "processed"}])
        assert isinstance(final, dict) and isinstance(latest, dict)
        assert final["value"]["lastValidBlockHeight"] == (
            latest["value"]["lastValidBlockHeight"] - FINALITY_LAG
        )
        assert final["context"]["slot"] == latest["context"]["slot"] - FINALITY_LAG
    finally:
        await http.faults(haltSlots=False)


async def test_a_node_without_history_refuses_a_history_search(http: Http) -> None:
    sig = str(Signature.new_unique())
    await http.faults(historyOff=True)
    refused = await http.rpc("getSignatureStatuses", [[sig], {"searchTransactionHistory": True}])
    assert refused["error"]["code"] == -32011
    # The status cache still answers.
    assert (await value(http, "getSignatureStatuses", [[sig]]))["value"] == [None]  # type: ignore[index]
    await http.faults(historyOff=False)
    answer = await value(http, "getSignatureStatuses", [[sig], {"searchTransactionHistory": True}])
    assert answer["value"] == [None]  # type: ignore[index]


async def test_a_transaction_with_a_bad_signature_never_executes(
    devchain: Chain, http: Http
) -> None:
    dest = Keypair().pubkey()
    newest = await value(http, "getLatestBlockhash", [{"commitment": "processed"}])
    assert isinstance(newest, dict)
    good = signed(devchain.treasury, [sol_transfer(devchain.treasury, dest, 1_000_000)],
                  Hash.from_string(newest["value"]["blockhash"]))  # fmt: skip
    forged = Transaction.populate(good.message, [Signature(bytes([9]) * 64)])
    raw = base64.b64encode(bytes(forged)).decode()
    await value(http, "sendTransaction", [raw, {"encoding": "base64", "skipPreflight": True}])
    await http.faults(advanceSlots=1)
    body = await value(http, "getBalance", [str(dest), {"commitment": "processed"}])
    assert body["value"] == 0  # type: ignore[index]
