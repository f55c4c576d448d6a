"""getSignaturesForAddress: an account's history, newest first, with memos, paged."""

from __future__ import annotations

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.signature import Signature

from relayq.devchain.ledger import FINALIZED_DEPTH
from tests.devchain.conftest import Chain, Http, blockhash, signed, token_transfer, wait_status

MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


async def _pay_contract(devchain: Chain, client: AsyncClient, memo: str | None) -> Signature:
    m = devchain.mint("RLQB")
    contract_ata = devchain.manifest["contract"]["tokenAccounts"][m["mint"]]
    ixs = [token_transfer(devchain, "RLQB", m["treasuryAccount"], contract_ata,
                          devchain.treasury, 1_000)]  # fmt: skip
    if memo is not None:
        ixs.append(Instruction(MEMO_PROGRAM_ID, memo.encode(), []))
    tx = signed(devchain.treasury, ixs, await blockhash(client))
    sig = (await client.send_raw_transaction(bytes(tx))).value
    assert (await wait_status(client, sig)).err is None
    return sig


async def test_an_accounts_history_lists_its_transactions_newest_first_with_memos(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    m = devchain.mint("RLQB")
    contract_ata = Pubkey.from_string(devchain.manifest["contract"]["tokenAccounts"][m["mint"]])
    first = await _pay_contract(devchain, client, "relayq:purchase:one")
    second = await _pay_contract(devchain, client, None)
    await http.faults(advanceSlots=2)

    # Finalized does not show them yet; confirmed does.
    finalized = (
        await client.get_signatures_for_address(contract_ata, limit=5, commitment=Finalized)
    ).value
    assert first not in [s.signature for s in finalized]
    found = (await client.get_signatures_for_address(contract_ata, commitment=Confirmed)).value
    assert [s.signature for s in found[:2]] == [second, first]
    assert found[0].memo is None and found[0].err is None
    assert found[1].memo == f"[{len('relayq:purchase:one')}] relayq:purchase:one"
    assert found[1].slot <= found[0].slot and found[1].block_time

    # Paging: limit, then before the last one seen, and until a signature (excluded).
    page = (
        await client.get_signatures_for_address(contract_ata, limit=1, commitment=Confirmed)
    ).value
    assert [s.signature for s in page] == [second]
    rest = (
        await client.get_signatures_for_address(
            contract_ata, before=second, limit=1, commitment=Confirmed
        )
    ).value
    assert [s.signature for s in rest] == [first]
    until = (
        await client.get_signatures_for_address(contract_ata, until=first, commitment=Confirmed)
    ).value
    assert [s.signature for s in until] == [second]

    # Another account's history does not list them.
    other = Pubkey.from_string(devchain.mint("RLQC")["treasuryAccount"])
    theirs = (await client.get_signatures_for_address(other, commitment=Confirmed)).value
    assert not {first, second} & {s.signature for s in theirs}

    await http.faults(advanceSlots=FINALIZED_DEPTH)
    finalized = (await client.get_signatures_for_address(contract_ata, commitment=Finalized)).value
    assert [s.signature for s in finalized[:2]] == [second, first]
    assert finalized[0].confirmation_status is not None


async def test_history_refuses_processed_and_bad_limits(devchain: Chain, http: Http) -> None:
    address = str(devchain.contract.pubkey())
    bad = [{"commitment": "processed"}, {"limit": 0}, {"limit": 1001}, {"before": "nope"}]
    for config in bad:
        answer = await http.rpc("getSignaturesForAddress", [address, config])
        assert answer["error"]["code"] == -32602, answer
    ok = await http.rpc("getSignaturesForAddress", [address])
    assert isinstance(ok["result"], list)


async def test_typed_client_refuses_processed_history(devchain: Chain, client: AsyncClient) -> None:
    with pytest.raises(RPCException):
        await client.get_signatures_for_address(devchain.contract.pubkey(), commitment=Processed)
