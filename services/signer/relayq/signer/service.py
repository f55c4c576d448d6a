"""The signer service: `POST /v1/sign`, `GET /v1/pubkey`, `/healthz`, `/metrics`.

The one process that holds the relayer's key. Callers (the API and the workers)
authenticate with a shared bearer token, compared in constant time; each
message is judged by the `Policy` before it is signed, and a refusal is a 403
problem+json with its own code, logged and counted. Run one replica: the
per-window cap is counted in this process.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from solders.keypair import Keypair
from solders.message import MessageV0, from_bytes_versioned, to_bytes_versioned
from solders.pubkey import Pubkey

from relayq.core.env import SettingsError, number
from relayq.core.telemetry import configure_logging, log_event
from relayq.relayer.allowlist import build_allowlist, load_swap_accounts
from relayq.relayer.baskets import load_baskets
from relayq.relayer.chain.errors import ChainError
from relayq.relayer.chain.jito import JitoClient
from relayq.relayer.chain.keys import load_keypair
from relayq.relayer.chain.rpc import SolanaRpc
from relayq.relayer.chain.settings import ChainSettings, SwapSourceKind, signer_token
from relayq.signer.metrics import REFUSALS, SIGNATURES
from relayq.signer.policy import Limits, Policy, Refused

log = logging.getLogger("relayq.signer")
PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://relayq.dev/problems/"
# A serialized transaction is at most 1232 bytes; base64 and JSON add a little.
MAX_BODY_BYTES = 8192
LAMPORTS_PER_SOL = 1_000_000_000
DEFAULT_LIMITS = Limits(10 * LAMPORTS_PER_SOL, 100 * LAMPORTS_PER_SOL, 3600.0)


@dataclass(frozen=True)
class SignerSettings:
    """The signer's settings (`RELAYQ_SIGNER_*`; the chain's come from `ChainSettings`).

    Attributes:
        token: the bearer token callers present (`RELAYQ_SIGNER_TOKEN[_FILE]`).
        port: the port it listens on (`RELAYQ_SIGNER_PORT`, 8090).
        host: the address it listens on (`RELAYQ_SIGNER_HOST`, 0.0.0.0).
        limits: lamports one message may move (`RELAYQ_SIGNER_MAX_LAMPORTS_PER_TX`,
            default 10 SOL), all messages in a window may move
            (`RELAYQ_SIGNER_MAX_LAMPORTS_PER_WINDOW`, default 100 SOL) and the window
            (`RELAYQ_SIGNER_WINDOW_SECONDS`, 3600).
    """

    token: str
    port: int = 8090
    host: str = "0.0.0.0"
    limits: Limits = DEFAULT_LIMITS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SignerSettings:
        env = os.environ if environ is None else environ
        token = signer_token(env)
        if not token:
            raise SettingsError("the signer needs RELAYQ_SIGNER_TOKEN or RELAYQ_SIGNER_TOKEN_FILE")
        d = cls(token)
        return cls(
            token=token,
            port=int(number(env, "RELAYQ_SIGNER_PORT", d.port, 0)),
            host=env.get("RELAYQ_SIGNER_HOST", d.host),
            limits=Limits(
                int(number(env, "RELAYQ_SIGNER_MAX_LAMPORTS_PER_TX", d.limits.per_transaction, 0)),
                int(number(env, "RELAYQ_SIGNER_MAX_LAMPORTS_PER_WINDOW", d.limits.per_window, 0)),
                number(env, "RELAYQ_SIGNER_WINDOW_SECONDS", d.limits.window_seconds, 1),
            ),
        )


@dataclass
class Signing:
    """What the running service holds: the key, its policy and the chain clients."""

    keypair: Keypair
    policy: Policy
    token: bytes
    rpc: SolanaRpc
    jito: JitoClient


SIGNING = web.AppKey("signing", Signing)


def problem(status: int, code: str, detail: str) -> web.Response:
    body = {"type": PROBLEM_BASE + code, "title": code, "status": status, "code": code,
            "detail": detail}  # fmt: skip
    return web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


def _authorized(request: web.Request, token: bytes) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token)


def _refuse(status: int, code: str, detail: str, **fields: Any) -> web.Response:
    REFUSALS.labels(reason=code).inc()
    log_event(log, logging.WARNING, "signing refused", reason=code, detail=detail, **fields)
    return problem(status, code, detail)


async def pubkey(request: web.Request) -> web.Response:
    signing = request.app[SIGNING]
    if not _authorized(request, signing.token):
        return _refuse(401, "unauthorized", "a valid bearer token is required")
    return web.json_response({"pubkey": str(signing.keypair.pubkey())})


async def sign(request: web.Request) -> web.Response:
    signing = request.app[SIGNING]
    if not _authorized(request, signing.token):
        return _refuse(401, "unauthorized", "a valid bearer token is required")
    try:
        body = await request.json()
        purpose = str(body["purpose"])
        raw = base64.b64decode(str(body["message"]), validate=True)
        decoded = from_bytes_versioned(raw)
        refund_to = None if body.get("refundTo") is None else Pubkey.from_string(body["refundTo"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        return _refuse(
            400, "invalid-sign-request", f"expected {{message, purpose[, refundTo]}}: {exc}"
        )
    message = decoded if isinstance(decoded, MessageV0) else None
    if message is None:
        return _refuse(403, "invalid-message", "only v0 messages are signed")
    try:
        lamports = await signing.policy.judge(message, purpose, refund_to)
        signing.policy.reserve(lamports)
    except Refused as exc:
        return _refuse(403, exc.code, exc.detail, purpose=purpose)
    except ChainError as exc:
        # Tip accounts or lookup tables could not be read: no verdict, try again later.
        log_event(log, logging.WARNING, "signing deferred", error=str(exc))
        return problem(503, "chain-unavailable", f"cannot judge the message now: {exc}")
    signature = signing.keypair.sign_message(to_bytes_versioned(message))
    SIGNATURES.labels(purpose=purpose).inc()
    log_event(log, logging.INFO, "signed", purpose=purpose, lamports=lamports,
              signature=str(signature),
              **({"refund_to": str(refund_to)} if refund_to is not None else {}))  # fmt: skip
    return web.json_response({"signature": str(signature)})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def open_signing(chain: ChainSettings, settings: SignerSettings) -> Signing:
    """The key, the allow-list and the policy from settings; ValueError when incomplete."""
    if not (chain.relayer_keypair_file and chain.contract_owner and chain.baskets_file):
        raise ValueError(
            "the signer needs RELAYQ_RELAYER_KEYPAIR_FILE, RELAYQ_CONTRACT_OWNER"
            " and RELAYQ_BASKETS_FILE"
        )
    keypair = load_keypair(chain.relayer_keypair_file)
    allowlist = build_allowlist(
        keypair.pubkey(),
        Pubkey.from_string(chain.contract_owner),
        load_baskets(chain.baskets_file).values(),
        chain.swap_programs,
        load_swap_accounts(chain.swap_pools_file),
    )
    counterparties: frozenset[Pubkey] = frozenset()
    if chain.swap_source is SwapSourceKind.TREASURY and chain.treasury_keypair_file:
        # The local treasury is paid in SOL directly (development chains only).
        counterparties = frozenset({load_keypair(chain.treasury_keypair_file).pubkey()})
    rpc = SolanaRpc(chain.rpc_url, chain.request_timeout_seconds)
    jito = JitoClient(chain.jito_url, chain.jito_requests_per_second, chain.request_timeout_seconds)
    policy = Policy(allowlist, settings.limits, jito.tip_accounts, rpc.account_data, counterparties)
    return Signing(keypair, policy, settings.token.encode(), rpc, jito)


def create_app(signing: Signing) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIGNING] = signing

    async def clients(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[SIGNING].jito.close()
        await app[SIGNING].rpc.close()

    app.cleanup_ctx.append(clients)
    app.router.add_post("/v1/sign", sign)
    app.router.add_get("/v1/pubkey", pubkey)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="relayq-signer", description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="overrides RELAYQ_SIGNER_PORT")
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("RELAYQ_LOG_LEVEL", "INFO"))
    settings = SignerSettings.from_env()
    signing = open_signing(ChainSettings.from_env(), settings)
    port = settings.port if args.port is None else args.port
    log_event(log, logging.INFO, "signer listening", port=port,
              pubkey=str(signing.keypair.pubkey()), started=time.time())  # fmt: skip
    web.run_app(create_app(signing), host=settings.host, port=port, print=None)
