"""The relayer's connected parts, shared by the gateway's purchase route and the job handlers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from relayq.core.clients import Clients
from relayq.core.quotas import Quotas
from relayq.relayer.allowlist import Allowlist, build_allowlist, load_swap_accounts
from relayq.relayer.baskets import Basket, load_baskets
from relayq.relayer.chain.jito import JitoClient
from relayq.relayer.chain.keys import load_keypair
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.settings import ChainSettings, SwapSourceKind
from relayq.relayer.chain.swap import JupiterSwap, SwapSource, TreasurySwap
from relayq.relayer.purchases import PurchaseStore
from relayq.relayer.signing import KeypairSigner, Purpose, RemoteSigner, Signer

# The largest serialized transaction the cluster accepts (IPv6 MTU minus headers).
PACKET_DATA_SIZE = 1232


@dataclass
class Relayer:
    """Everything a purchase or a transfer needs."""

    chain: ChainSettings
    clients: Clients
    rpc: SolanaRpc
    jito: JitoClient
    swap: SwapSource
    baskets: dict[str, Basket]
    signer: Signer
    contract_owner: Pubkey
    purchases: PurchaseStore
    allowlist: Allowlist
    quotas: Quotas
    # Bounds the purchases in flight: each holds RPC, block-engine and store capacity.
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))

    async def close(self) -> None:
        await self.swap.close()
        await self.jito.close()
        await self.rpc.close()
        await self.signer.close()

    def compile(
        self,
        instructions: list[Instruction],
        blockhash: Hash,
        lookup_tables: list[AddressLookupTableAccount] | None = None,
    ) -> MessageV0:
        """A v0 message paid by the relayer."""
        return MessageV0.try_compile(
            self.signer.pubkey(), instructions, lookup_tables or [], blockhash
        )

    async def sign(
        self,
        instructions: list[Instruction],
        blockhash: Hash,
        extra_signers: list[Keypair] | None = None,
        lookup_tables: list[AddressLookupTableAccount] | None = None,
        purpose: Purpose = Purpose.SWAP,
        refund_to: Pubkey | None = None,
    ) -> VersionedTransaction:
        """A v0 transaction paid and signed by the relayer (and any co-signers) for `purpose`;
        `refund_to`: the buyer's wallet a refund pays."""
        message = self.compile(instructions, blockhash, lookup_tables)
        return await self.signer.sign(message, extra_signers or [], purpose, refund_to)


async def open_signer(chain: ChainSettings) -> Signer:
    """The signer service when `RELAYQ_SIGNER_URL` is set, else the local keypair.

    ChainUnavailable when the service does not tell its pubkey.
    """
    if chain.signer_url:
        return await RemoteSigner.connect(
            chain.signer_url, chain.signer_token, chain.request_timeout_seconds
        )
    return KeypairSigner(load_keypair(chain.relayer_keypair_file))


async def open_relayer(chain: ChainSettings, clients: Clients) -> Relayer:
    """Build the relayer from settings; ValueError when they are incomplete."""
    if not chain.configured:
        raise ValueError(
            "the relayer needs RELAYQ_SIGNER_URL (or RELAYQ_RELAYER_KEYPAIR_FILE),"
            " RELAYQ_CONTRACT_OWNER and RELAYQ_BASKETS_FILE"
        )
    rpc = SolanaRpc(chain.rpc_url, chain.request_timeout_seconds)
    signer = await open_signer(chain)
    contract_owner = Pubkey.from_string(chain.contract_owner)
    baskets = load_baskets(chain.baskets_file)
    allowlist = build_allowlist(
        signer.pubkey(),
        contract_owner,
        baskets.values(),
        chain.swap_programs,
        load_swap_accounts(chain.swap_pools_file),
    )
    swap: SwapSource
    if chain.swap_source is SwapSourceKind.TREASURY:
        swap = TreasurySwap(rpc, load_keypair(chain.treasury_keypair_file))
    else:
        swap = JupiterSwap(
            chain.swap_api_url, rpc, chain.slippage_bps, allowlist, chain.request_timeout_seconds
        )
    return Relayer(
        chain=chain,
        clients=clients,
        rpc=rpc,
        jito=JitoClient(
            chain.jito_url, chain.jito_requests_per_second, chain.request_timeout_seconds
        ),
        swap=swap,
        baskets=baskets,
        signer=signer,
        contract_owner=contract_owner,
        purchases=PurchaseStore(clients.store.client, clients.settings.mongo_database),
        allowlist=allowlist,
        quotas=Quotas(clients.redis, clients.queue.keys),
        gate=asyncio.Semaphore(chain.purchase_concurrency),
    )
