"""Who signs the relayer's transactions: the `Signer` interface, a local key, the signer service.

Handlers and routes never hold the relayer's key; they hand a compiled message
to a Signer with the purpose it is signed for. `KeypairSigner` keeps the keypair
in the process (local development); `RemoteSigner` asks the signer service
(`relayq.signer`), the one process that holds the key and signs only what its
policy allows. A KMS or HSM backend implements the same interface. Partial
signatures by co-signers (a treasury source) are added by the caller's keypairs.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from relayq.relayer.chain.errors import ChainError, ChainUnavailable


class Purpose(StrEnum):
    """What a transaction is signed for; the signer's policy judges it by this."""

    SWAP = "swap"
    TRANSFER = "transfer"
    TIP = "tip"
    # One SOL transfer of a purchase's lamports back to its buyer (`refund_to`).
    REFUND = "refund"


class SigningRefused(ChainError):
    """The signer refused the message under its policy; nothing was signed.

    Attributes:
        code: the signer's refusal code (e.g. `program-not-allowed`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"signing refused ({code}): {message}")
        self.code = code


class Signer(Protocol):
    """Signs messages whose fee payer is `pubkey()`."""

    def pubkey(self) -> Pubkey:
        """The relayer's address: the fee payer and the owner of its token accounts."""
        ...

    async def sign(
        self,
        message: MessageV0,
        co_signers: Sequence[Keypair] = (),
        purpose: Purpose = Purpose.SWAP,
        refund_to: Pubkey | None = None,
    ) -> VersionedTransaction:
        """The message signed by the relayer and by each co-signer it requires.

        `refund_to` names the buyer's wallet a `refund` may pay (and only with
        that purpose). Raises SigningRefused when the signer's policy refuses
        `message` for `purpose`, ChainUnavailable when the signer cannot be asked.
        """
        ...

    async def close(self) -> None:
        """Release connections; a no-op for a local signer."""
        ...


def assemble(
    message: MessageV0, relayer: Pubkey, signature: Signature, co_signers: Sequence[Keypair]
) -> VersionedTransaction:
    """`message` with the relayer's `signature` and each required co-signer's own."""
    signed = {kp.pubkey(): kp for kp in co_signers}
    data = to_bytes_versioned(message)
    required = message.account_keys[: message.header.num_required_signatures]
    missing = [str(key) for key in required if key != relayer and key not in signed]
    if missing:
        raise ValueError(f"no signer for required accounts {missing}")
    signatures = [
        signature if key == relayer else signed[key].sign_message(data) for key in required
    ]
    return VersionedTransaction.populate(message, signatures)


class KeypairSigner:
    """A Signer holding the relayer's keypair in this process (no policy: local development)."""

    def __init__(self, keypair: Keypair) -> None:
        self._keypair = keypair

    def pubkey(self) -> Pubkey:
        return self._keypair.pubkey()

    async def sign(
        self,
        message: MessageV0,
        co_signers: Sequence[Keypair] = (),
        purpose: Purpose = Purpose.SWAP,
        refund_to: Pubkey | None = None,
    ) -> VersionedTransaction:
        signature = self._keypair.sign_message(to_bytes_versioned(message))
        return assemble(message, self._keypair.pubkey(), signature, co_signers)

    async def close(self) -> None:
        return None


class RemoteSigner:
    """A Signer asking the signer service over HTTP with a bearer token.

    Open it with `connect`, which learns the relayer's address from the service
    (`GET /v1/pubkey`); every call is bounded by `timeout_seconds`.
    """

    def __init__(self, url: str, token: str, timeout_seconds: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._pubkey: Pubkey | None = None

    @classmethod
    async def connect(cls, url: str, token: str, timeout_seconds: float = 5.0) -> RemoteSigner:
        """A signer that knows its pubkey; ChainUnavailable when the service does not answer."""
        signer = cls(url, token, timeout_seconds)
        try:
            body = await signer._call("GET", "/v1/pubkey", None)
            signer._pubkey = Pubkey.from_string(str(body["pubkey"]))
        except BaseException:
            await signer.close()
            raise
        return signer

    def pubkey(self) -> Pubkey:
        if self._pubkey is None:
            raise RuntimeError("RemoteSigner used before connect()")
        return self._pubkey

    async def sign(
        self,
        message: MessageV0,
        co_signers: Sequence[Keypair] = (),
        purpose: Purpose = Purpose.SWAP,
        refund_to: Pubkey | None = None,
    ) -> VersionedTransaction:
        payload = {
            "message": base64.b64encode(to_bytes_versioned(message)).decode(),
            "purpose": purpose.value,
        }
        if refund_to is not None:
            payload["refundTo"] = str(refund_to)
        body = await self._call("POST", "/v1/sign", payload)
        try:
            signature = Signature.from_string(str(body["signature"]))
        except (KeyError, ValueError) as exc:
            raise ChainUnavailable(f"signer: malformed answer: {exc}") from None
        if not signature.verify(self.pubkey(), to_bytes_versioned(message)):
            raise ChainUnavailable("signer: the signature does not verify against its pubkey")
        return assemble(message, self.pubkey(), signature, co_signers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, payload: Any) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        try:
            async with self._session.request(method, self.url + path, json=payload) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ChainUnavailable(f"signer {method} {path}: {exc!r}") from None
        if status == 403 and isinstance(body, dict):
            raise SigningRefused(str(body.get("code", "refused")), str(body.get("detail", "")))
        if status != 200 or not isinstance(body, dict):
            raise ChainUnavailable(f"signer {method} {path}: HTTP {status}: {body!r}"[:300])
        return body


def signed_size(message: MessageV0) -> int:
    """The size the message will have once signed, without signing it."""
    signatures = [Signature.default()] * message.header.num_required_signatures
    return len(bytes(VersionedTransaction.populate(message, signatures)))
