"""sendTransaction and friends: effects, duplicates, expiry, statuses, failures."""

from __future__ import annotations

import base64

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus

from relayq.devchain.codec import b58encode
from tests.devchain.conftest import (
    VALIDITY_SLOTS,
    Chain,
    Http,
    blockhash,
    signed,
    sol_transfer,
    token_balance,
    token_transfer,
    wait_status,
)

SKIP = TxOpts(skip_preflight=True)


def _preflight_error(exc: RPCException) -> SendTransactionPreflightFailureMessage:
    err = exc.args[0]
    assert isinstance(err, SendTransactionPreflightFailureMessage), err
    return err


async def test_spl_transfer_from_relayer_to_contract(devchain: Chain, client: AsyncClient) -> None:
    m = devchain.mint("RLQA")
    contract_ata = devchain.manifest["contract"]["tokenAccounts"][m["mint"]]
    before = await token_balance(client, contract_ata)
    # The relayer receives tokens from the treasury first...
    fund = signed(devchain.treasury, [token_transfer(
        devchain, "RLQA", m["treasuryAccount"], m["relayerAccount"], devchain.treasury, 5_000_000
    )], await blockhash(client))  # fmt: skip
    sig = (await client.send_raw_transaction(bytes(fund))).value
    assert sig == fund.signatures[0]
    assert (await wait_status(client, sig)).err is None
    # ...then pays them to the contract.
    pay = signed(devchain.relayer, [token_transfer(
        devchain, "RLQA", m["relayerAccount"], contract_ata, devchain.relayer, 2_500_000
    )], await blockhash(client))  # fmt: skip
    resp = await client.send_transaction(pay, opts=TxOpts(preflight_commitment=Confirmed))
    await client.confirm_transaction(resp.value, Confirmed, sleep_seconds=0.05)
    assert await token_balance(client, contract_ata) == before + 2_500_000

    tx = await client.get_transaction(resp.value, commitment=Confirmed,
                                      max_supported_transaction_version=0)  # fmt: skip
    assert tx.value is not None
    meta = tx.value.transaction.meta
    assert meta is not None and meta.err is None and meta.fee == 5000
    assert tx.value.slot > 0 and tx.value.block_time
    post = {str(b.owner): int(b.ui_token_amount.amount) for b in meta.post_token_balances or []}
    pre = {str(b.owner): int(b.ui_token_amount.amount) for b in meta.pre_token_balances or []}
    owner = str(devchain.contract.pubkey())
    assert post[owner] - pre[owner] == 2_500_000
    assert meta.pre_balances[0] - meta.post_balances[0] == 5000
    encoded = await client.get_transaction(resp.value, "base64", Confirmed)
    assert encoded.value is not None
    parsed = await client.get_transaction(resp.value, "jsonParsed", Confirmed)
    assert parsed.value is not None
    keys = parsed.value.transaction.transaction.message.account_keys
    assert keys[0].pubkey == devchain.relayer.pubkey() and keys[0].signer and keys[0].writable


async def test_same_signed_transaction_twice_has_one_effect(
    devchain: Chain, client: AsyncClient
) -> None:
    dest = Keypair().pubkey()
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 1_000_000)],
                await blockhash(client))  # fmt: skip
    sig = (await client.send_raw_transaction(bytes(tx))).value
    with pytest.raises(RPCException) as exc:
        await client.send_raw_transaction(bytes(tx))
    err = _preflight_error(exc.value)
    assert (
        err.message == "Transaction simulation failed: This transaction has already been processed"
    )
    assert str(err.data.err) == "TransactionErrorFieldless.AlreadyProcessed"
    # Without preflight the RPC forwards it; the cluster drops the duplicate.
    assert (await client.send_raw_transaction(bytes(tx), opts=SKIP)).value == sig
    await wait_status(client, sig)
    assert (await client.get_balance(dest)).value == 1_000_000


async def test_expired_blockhash_is_rejected(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    old = await blockhash(client)
    await http.faults(advanceSlots=VALIDITY_SLOTS + 1)
    dest = Keypair().pubkey()
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 1_000_000)], old)
    with pytest.raises(RPCException) as exc:
        await client.send_raw_transaction(bytes(tx))
    err = _preflight_error(exc.value)
    assert err.message == "Transaction simulation failed: Blockhash not found"
    assert str(err.data.err) == "TransactionErrorFieldless.BlockhashNotFound"
    sig = (await client.send_raw_transaction(bytes(tx), opts=SKIP)).value
    await http.faults(advanceSlots=2)
    assert (await client.get_signature_statuses([sig], True)).value == [None]
    assert (await client.get_balance(dest)).value == 0


async def test_signature_statuses_move_from_processed_to_finalized(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    await http.faults(haltSlots=True)
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, Keypair().pubkey(), 1_000_000)],
                await blockhash(client))  # fmt: skip
    sig = (await client.send_raw_transaction(bytes(tx))).value
    unknown = Signature.new_unique()
    statuses = (await client.get_signature_statuses([sig, unknown])).value
    assert statuses[1] is None
    first = statuses[0]
    assert first is not None and first.err is None and first.confirmations == 0
    assert first.confirmation_status == TransactionConfirmationStatus.Processed
    await http.faults(advanceSlots=1)
    confirmed = (await client.get_signature_statuses([sig])).value[0]
    assert (
        confirmed is not None
        and confirmed.confirmation_status == TransactionConfirmationStatus.Confirmed
    )
    assert confirmed.slot == first.slot
    await http.faults(advanceSlots=40)
    final = (await client.get_signature_statuses([sig], search_transaction_history=True)).value[0]
    assert (
        final is not None and final.confirmation_status == TransactionConfirmationStatus.Finalized
    )
    assert final.confirmations is None
    assert (
        await client.get_transaction(sig, commitment=Finalized)
    ).value is not None  # visible at finalized


async def test_failing_transaction_preflight_error_or_recorded_failure(
    devchain: Chain, client: AsyncClient
) -> None:
    poor = Keypair()
    await wait_status(client, (await client.request_airdrop(poor.pubkey(), 10_000_000)).value)
    too_much = signed(
        poor, [sol_transfer(poor, Keypair().pubkey(), 10**12)], await blockhash(client)
    )
    with pytest.raises(RPCException) as exc:
        await client.send_raw_transaction(bytes(too_much))
    err = _preflight_error(exc.value)
    assert err.message == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert err.data.logs and err.data.units_consumed
    assert (await client.get_balance(poor.pubkey())).value == 10_000_000  # preflight: no fee
    sig = (await client.send_raw_transaction(bytes(too_much), opts=SKIP)).value
    status = await wait_status(client, sig)
    assert status.err is not None and "InstructionError" in str(status.err)
    assert (await client.get_balance(poor.pubkey())).value == 10_000_000 - 5000  # fee paid


async def test_bad_signature_and_undecodable_transactions_are_refused(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, Keypair().pubkey(), 1)],
                await blockhash(client))  # fmt: skip
    raw = bytearray(bytes(tx))
    raw[10] ^= 0xFF  # inside the first signature
    bad = await http.rpc(
        "sendTransaction", [base64.b64encode(bytes(raw)).decode(), {"encoding": "base64"}]
    )
    assert bad["error"]["code"] == -32003
    junk = await http.rpc("sendTransaction", ["AAAA", {"encoding": "base64"}])
    assert junk["error"]["code"] == -32602
    wrong = await http.rpc("sendTransaction", ["!!", {"encoding": "base64"}])
    assert wrong["error"]["code"] == -32602


async def test_base58_encoding_and_jito_transactions_endpoint(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    dest = Keypair().pubkey()
    recent = await blockhash(client)
    tx58 = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 1_000_000)], recent)
    body = await http.rpc("sendTransaction", [b58encode(bytes(tx58))])  # base58 is the default
    assert body["result"] == str(tx58.signatures[0])
    via_jito = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 2_000_000)], recent)
    params = [base64.b64encode(bytes(via_jito)).decode(), {"encoding": "base64"}]
    body = await http.rpc("sendTransaction", params, path="/api/v1/transactions")
    assert body["result"] == str(via_jito.signatures[0])
    await wait_status(client, via_jito.signatures[0])
    assert (await client.get_balance(dest)).value == 3_000_000
    other = await http.rpc("getSlot", [], path="/api/v1/transactions")
    assert other["error"]["code"] == -32601


async def test_simulate_transaction_does_not_commit(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    dest = Keypair().pubkey()
    tx = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 1_000_000)],
                await blockhash(client))  # fmt: skip
    sim = (await client.simulate_transaction(VersionedTransaction.from_legacy(tx))).value
    assert sim.err is None and sim.logs and sim.units_consumed
    failing = signed(devchain.relayer, [sol_transfer(devchain.relayer, dest, 10**18)],
                     await blockhash(client))  # fmt: skip
    assert (await client.simulate_transaction(VersionedTransaction.from_legacy(failing))).value.err
    stale = await http.rpc(
        "simulateTransaction", [b58encode(bytes(tx)), {"replaceRecentBlockhash": True}]
    )
    assert stale["result"]["value"]["replacementBlockhash"]["blockhash"]
    assert (await client.get_balance(dest)).value == 0
    # Simulating does not mark the signature processed: the real send still lands.
    await wait_status(client, (await client.send_raw_transaction(bytes(tx))).value)
    assert (await client.get_balance(dest)).value == 1_000_000


async def test_airdrop_is_a_confirmable_transaction(client: AsyncClient) -> None:
    who = Keypair().pubkey()
    first = (await client.request_airdrop(who, 5_000_000)).value
    second = (await client.request_airdrop(who, 5_000_000)).value
    assert first != second
    await client.confirm_transaction(second, Confirmed, sleep_seconds=0.05)
    assert (await client.get_balance(who)).value == 10_000_000
    assert isinstance(who, Pubkey)


async def test_versioned_transaction_and_get_transaction_rules(
    devchain: Chain, client: AsyncClient, http: Http
) -> None:
    dest = Keypair().pubkey()
    recent = await blockhash(client)
    msg = MessageV0.try_compile(
        devchain.relayer.pubkey(), [sol_transfer(devchain.relayer, dest, 4_000_000)], [], recent
    )
    tx = VersionedTransaction(msg, [devchain.relayer])
    sig = (await client.send_raw_transaction(bytes(tx))).value
    await wait_status(client, sig)
    assert (await client.get_balance(dest)).value == 4_000_000
    processed = await http.rpc("getTransaction", [str(sig), {"commitment": "processed"}])
    assert processed["error"]["code"] == -32602
    await http.faults(advanceSlots=1)
    legacy_client = await http.rpc("getTransaction", [str(sig), {"commitment": "confirmed"}])
    assert legacy_client["error"]["code"] == -32015
    assert (
        await client.get_transaction(sig, commitment=Finalized, max_supported_transaction_version=0)
    ).value is None, "not finalized yet"
    found = await client.get_transaction(
        sig, commitment=Confirmed, max_supported_transaction_version=0
    )
    assert found.value is not None and found.value.transaction.meta is not None
    assert found.value.transaction.version == 0
    assert (
        await client.get_transaction(Signature.new_unique(), commitment=Confirmed)
    ).value is None


def test_the_dev_command_has_a_devchain_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from relayq.dev.main import main

    with pytest.raises(SystemExit) as exc:
        main(["devchain", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--slot-ms", "--blockhash-validity-slots", "--seed", "--faults", "--state-dir"):
        assert flag in out
