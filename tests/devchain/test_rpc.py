"""Read methods of the Solana RPC, driven by solana-py's AsyncClient (typed parsers)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solana.rpc.models import TokenAccountOpts
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.responses import IsBlockhashValidResp
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.state import TokenAccount

from relayq.devchain.seed import TREASURY_TOKENS, Genesis
from tests.devchain.conftest import VALIDITY_SLOTS, Chain, Http


def test_manifest_names_the_seeded_keys_and_keypair_files_are_private(devchain: Chain) -> None:
    m = devchain.manifest
    g = Genesis.derive("relayq-devchain")  # the default seed: stable between runs
    assert m["treasury"]["pubkey"] == str(g.treasury.pubkey()) == str(devchain.treasury.pubkey())
    assert m["relayer"]["pubkey"] == str(devchain.relayer.pubkey())
    assert m["contract"]["owner"] == str(devchain.contract.pubkey())
    assert [x["symbol"] for x in m["mints"]] == ["RLQA", "RLQB", "RLQC"]
    assert len(m["tipAccounts"]) == 8
    assert m["jitoUrl"] == m["rpcUrl"]
    assert (m["slotMs"], m["blockhashValiditySlots"]) == (50, VALIDITY_SLOTS)
    assert set(m["contract"]["tokenAccounts"]) == {x["mint"] for x in m["mints"]}
    for who in ("treasury", "relayer", "contract"):
        mode = stat.S_IMODE(os.stat(m[who]["keypairFile"]).st_mode)
        assert mode == 0o600, (who, oct(mode))


async def test_seeded_balances(devchain: Chain, client: AsyncClient) -> None:
    relayer = (await client.get_balance(devchain.relayer.pubkey())).value
    assert 990 * 10**9 < relayer <= 1000 * 10**9
    assert (await client.get_balance(devchain.treasury.pubkey())).value > 10**14
    for tip in devchain.tips:
        assert (await client.get_balance(tip)).value >= 890_880
    for m in devchain.manifest["mints"]:
        bal = (
            await client.get_token_account_balance(Pubkey.from_string(m["relayerAccount"]))
        ).value
        assert bal.decimals == 6 and int(bal.amount) >= 0
        treasury = await client.get_token_account_balance(Pubkey.from_string(m["treasuryAccount"]))
        assert 0 < int(treasury.value.amount) <= TREASURY_TOKENS
        assert treasury.value.ui_amount_string == str(int(treasury.value.amount) / 10**6).rstrip(
            "0"
        ).rstrip(".")
        supply = await client.get_token_supply(Pubkey.from_string(m["mint"]))
        assert int(supply.value.amount) == TREASURY_TOKENS


async def test_account_info_in_base64_and_json_parsed(devchain: Chain, client: AsyncClient) -> None:
    m = devchain.mint("RLQB")
    ata = Pubkey.from_string(m["treasuryAccount"])
    info = (await client.get_account_info(ata)).value
    assert info is not None and str(info.owner) == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
    state = TokenAccount.from_bytes(info.data)
    assert str(state.mint) == m["mint"] and state.owner == devchain.treasury.pubkey()
    parsed = (await client.get_account_info_json_parsed(ata)).value
    assert parsed is not None
    data = parsed.data
    assert data.program == "spl-token" and data.parsed["type"] == "account"
    assert data.parsed["info"]["owner"] == str(devchain.treasury.pubkey())
    mint = (await client.get_account_info_json_parsed(Pubkey.from_string(m["mint"]))).value
    assert mint is not None and mint.data.parsed["info"]["mintAuthority"] == str(
        devchain.treasury.pubkey()
    )
    missing = (await client.get_account_info(Pubkey.new_unique())).value
    assert missing is None
    many = await client.get_multiple_accounts([ata, Pubkey.new_unique(), devchain.relayer.pubkey()])
    assert [a is None for a in many.value] == [False, True, False]
    assert many.value[2] is not None and many.value[2].data == b""


async def test_token_accounts_by_owner_filters_by_mint(
    devchain: Chain, client: AsyncClient
) -> None:
    m = devchain.mint("RLQC")
    resp = await client.get_token_accounts_by_owner(
        devchain.contract.pubkey(), TokenAccountOpts(mint=Pubkey.from_string(m["mint"]))
    )
    assert [str(a.pubkey) for a in resp.value] == [
        devchain.manifest["contract"]["tokenAccounts"][m["mint"]]
    ]
    every = await client.get_token_accounts_by_owner(
        devchain.relayer.pubkey(),
        TokenAccountOpts(program_id=Pubkey.from_string(str(TOKEN_PROGRAM_ID))),
    )
    assert sorted(str(a.pubkey) for a in every.value) == sorted(
        x["relayerAccount"] for x in devchain.manifest["mints"]
    )
    assert base64.b64encode(every.value[0].account.data)
    parsed = await client.get_token_accounts_by_owner_json_parsed(
        devchain.contract.pubkey(), TokenAccountOpts(mint=Pubkey.from_string(m["mint"]))
    )
    info = parsed.value[0].account.data.parsed["info"]
    assert info["mint"] == m["mint"] and info["tokenAmount"]["decimals"] == 6
    assert info["state"] == "initialized" and info["isNative"] is False


async def test_cluster_methods(client: AsyncClient) -> None:
    assert (await client.get_version()).value.solana_core
    assert await client.is_connected()
    genesis = (await client.get_genesis_hash()).value
    assert genesis == (await client.get_genesis_hash()).value
    first = (await client.get_slot()).value
    await asyncio.sleep(0.3)
    later = (await client.get_slot()).value
    assert later > first, "slots advance with time"
    assert (await client.get_block_height()).value >= later
    epoch = (await client.get_epoch_info()).value
    assert epoch.absolute_slot >= later and epoch.slots_in_epoch == 432_000
    rent = (await client.get_minimum_balance_for_rent_exemption(165)).value
    assert rent == 2_039_280


async def _is_valid(http: Http, blockhash: Hash) -> bool:
    # solana-py has no isBlockhashValid; solders' typed parser checks the shape.
    body = await http.rpc("isBlockhashValid", [str(blockhash)])
    return IsBlockhashValidResp.from_json(json.dumps(body)).value


async def test_latest_blockhash_is_valid_for_the_window(client: AsyncClient, http: Http) -> None:
    latest = (await client.get_latest_blockhash()).value
    slot = (await client.get_slot()).value
    assert slot <= latest.last_valid_block_height <= slot + VALIDITY_SLOTS + 1
    assert await _is_valid(http, latest.blockhash) is True
    assert await _is_valid(http, Hash.new_unique()) is False
    await http.faults(advanceSlots=VALIDITY_SLOTS + 1)
    assert await _is_valid(http, latest.blockhash) is False
    newer = (await client.get_latest_blockhash()).value
    assert newer.blockhash != latest.blockhash


async def test_unknown_method_and_bad_params_are_json_rpc_errors(http: Http) -> None:
    assert (await http.rpc("getNothing"))["error"]["code"] == -32601
    bad = await http.rpc("getBalance", ["not-a-key"])
    assert bad["error"]["code"] == -32602 and bad["id"] == 1
    assert (await http.rpc("getBalance", []))["error"]["code"] == -32602
    not_token = await http.rpc("getTokenAccountBalance", [str(Pubkey.new_unique())])
    assert not_token["error"]["code"] == -32602
    status, body = await http.post("/", {"jsonrpc": "2.0", "id": 3})
    assert status == 200 and body["error"]["code"] == -32600
    async with http.session.post(http.url + "/", data=b"{nope") as resp:
        assert (await resp.json())["error"]["code"] == -32700
    status, batch = await http.post("/", [
        {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
        {"jsonrpc": "2.0", "id": 2, "method": "getHealth"},
    ])  # fmt: skip
    assert [b["id"] for b in batch] == [1, 2] and batch[1]["result"] == "ok"
    async with http.session.get(http.url + "/health") as resp:
        assert await resp.text() == "ok"


async def test_typed_client_raises_on_rpc_errors(client: AsyncClient) -> None:
    with pytest.raises(RPCException):
        await client.get_token_account_balance(Pubkey.new_unique())
