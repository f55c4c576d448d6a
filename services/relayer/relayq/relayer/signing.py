"""Who signs the relayer's transactions: the `Signer` interface and a local-keypair one.

Handlers and routes never hold the relayer's key; they hand a compiled message
to a Signer. Today's one implementation keeps the keypair in the process. A
signer service (one pod that holds the key and signs what its policy allows)
or a KMS implements the same interface; partial signatures by co-signers (a
treasury source) are added by the caller's keypairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction


class Signer(Protocol):
    """Signs messages whose fee payer is `pubkey()`."""

    def pubkey(self) -> Pubkey:
        """The relayer's address: the fee payer and the owner of its token accounts."""
        ...

    async def sign(
        self, message: MessageV0, co_signers: Sequence[Keypair] = ()
    ) -> VersionedTransaction:
        """The message signed by the relayer and by each co-signer it requires."""
        ...


class KeypairSigner:
    """A Signer holding the relayer's keypair in this process."""

    def __init__(self, keypair: Keypair) -> None:
        self._keypair = keypair

    def pubkey(self) -> Pubkey:
        return self._keypair.pubkey()

    async def sign(
        self, message: MessageV0, co_signers: Sequence[Keypair] = ()
    ) -> VersionedTransaction:
        keypairs = {kp.pubkey(): kp for kp in [self._keypair, *co_signers]}
        required = message.account_keys[: message.header.num_required_signatures]
        missing = [str(key) for key in required if key not in keypairs]
        if missing:
            raise ValueError(f"no signer for required accounts {missing}")
        return VersionedTransaction(message, [keypairs[key] for key in required])


def signed_size(message: MessageV0) -> int:
    """The size the message will have once signed, without signing it."""
    signatures = [Signature.default()] * message.header.num_required_signatures
    return len(bytes(VersionedTransaction.populate(message, signatures)))
