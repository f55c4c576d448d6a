"""A devchain subprocess for the whole session (fast slots, faults on), and clients for it.

Tests share the chain, so they assert on changes they cause, never on totals;
armed faults are cleared before and after each test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Processed
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import transfer_checked
from spl.token.models import TransferCheckedParams

from relayq.dev.servers import LocalServer, devchain_server
from relayq.devchain.seed import read_keypair

SLOT_MS = 50
# 150 slots of 50 ms: 7.5 s, so a loaded machine does not expire blockhashes by itself;
# tests expire them on purpose with the advanceSlots fault.
VALIDITY_SLOTS = 150


@dataclass
class Chain:
    """The running devchain as its manifest describes it."""

    server: LocalServer
    state_dir: Path
    manifest: dict[str, Any]
    treasury: Keypair
    relayer: Keypair
    contract: Keypair

    @property
    def url(self) -> str:
        return str(self.manifest["rpcUrl"])

    @property
    def tips(self) -> list[Pubkey]:
        return [Pubkey.from_string(t) for t in self.manifest["tipAccounts"]]

    def mint(self, symbol: str) -> dict[str, Any]:
        return next(m for m in self.manifest["mints"] if m["symbol"] == symbol)


def start_chain(state_dir: Path, **opts: Any) -> Chain:
    server = devchain_server(state_dir, **opts).start(timeout=60)
    manifest = json.loads((state_dir / "chain.json").read_text())
    return Chain(
        server,
        state_dir,
        manifest,
        read_keypair(manifest["treasury"]["keypairFile"]),
        read_keypair(manifest["relayer"]["keypairFile"]),
        read_keypair(manifest["contract"]["keypairFile"]),
    )


@pytest.fixture(scope="session")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    chain = start_chain(
        tmp_path_factory.mktemp("devchain"),
        slot_ms=SLOT_MS,
        blockhash_validity_slots=VALIDITY_SLOTS,
        faults=True,
        jito_rate_limit=0,
    )
    yield chain
    chain.server.stop()
    print((chain.state_dir / "devchain.log").read_text()[-4000:])


class Http:
    """Raw JSON-RPC and control calls to a devchain."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def rpc(self, method: str, params: list[Any] | None = None, path: str = "/") -> Any:
        """The whole JSON-RPC response object (result or error)."""
        status, body = await self.post(path, {"jsonrpc": "2.0", "id": 1, "method": method,
                                              "params": params or []})  # fmt: skip
        assert status == 200, (status, body)
        return body

    async def jito(self, method: str, params: list[Any]) -> Any:
        return await self.rpc(method, params, "/api/v1/bundles")

    async def faults(self, **body: Any) -> dict[str, Any]:
        status, answer = await self.post("/devchain/faults", body)
        assert status == 200, answer
        return dict(answer)

    async def state(self) -> dict[str, Any]:
        async with self.session.get(self.url + "/devchain/state") as resp:
            return dict(await resp.json())


@pytest.fixture
async def http(devchain: Chain) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        h = Http(session, devchain.url)
        await h.faults(reset=True)
        yield h
        await h.faults(reset=True)


@pytest.fixture
async def client(devchain: Chain, http: Http) -> AsyncIterator[AsyncClient]:
    # Processed: these tests read what they just did; the views have tests of their own.
    async with AsyncClient(devchain.url, commitment=Processed, timeout=10) as c:
        yield c


# -- transaction builders (what a relayer does) ---------------------------------
async def blockhash(client: AsyncClient) -> Hash:
    return (await client.get_latest_blockhash()).value.blockhash


def signed(payer: Keypair, ixs: list[Instruction], recent: Hash, *others: Keypair) -> Transaction:
    msg = Message.new_with_blockhash(ixs, payer.pubkey(), recent)
    return Transaction([payer, *others], msg, recent)


def sol_transfer(src: Keypair, dst: Pubkey, lamports: int) -> Instruction:
    return transfer(TransferParams(from_pubkey=src.pubkey(), to_pubkey=dst, lamports=lamports))


def token_transfer(
    chain: Chain, symbol: str, source: str, dest: str, owner: Keypair, amount: int
) -> Instruction:
    m = chain.mint(symbol)
    return transfer_checked(TransferCheckedParams(
        program_id=TOKEN_PROGRAM_ID,
        source=Pubkey.from_string(source),
        mint=Pubkey.from_string(m["mint"]),
        dest=Pubkey.from_string(dest),
        owner=owner.pubkey(),
        amount=amount,
        decimals=m["decimals"],
    ))  # fmt: skip


async def token_balance(client: AsyncClient, account: str) -> int:
    return int((await client.get_token_account_balance(Pubkey.from_string(account))).value.amount)


async def wait_status(client: AsyncClient, sig: Signature, timeout: float = 10.0) -> Any:
    """Poll getSignatureStatuses until the signature is known."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = (await client.get_signature_statuses([sig])).value[0]
        if status is not None:
            return status
        assert loop.time() < deadline, f"{sig} not seen within {timeout}s"
        await asyncio.sleep(SLOT_MS / 1000)
