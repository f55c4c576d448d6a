"""The relayer's gateway routes: buy tokens (swap now, transfer later) and list the baskets.

The gateway serves their `OPERATIONS` when `relayq.relayer.jobs` is among its
job modules; without a configured chain they answer 503 relayer-unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema

from relayq.api.contract import Operation, Response, body, query
from relayq.api.keys import CLIENT, CLIENTS, PROCESS
from relayq.api.problems import Problem, unavailable
from relayq.api.requests import idempotency_key, trace_of
from relayq.core.jobs import InvalidPayload, Task
from relayq.core.store import IdempotencyConflict
from relayq.core.switches import Switch
from relayq.core.telemetry import log_event
from relayq.relayer.buy import (
    BuyRequest,
    PurchaseLimitReached,
    RelayerShortOfSol,
    UnknownBasket,
    buy,
)
from relayq.relayer.chain.errors import ChainError, ChainUnavailable, SwapRefused
from relayq.relayer.chain.swap import InsufficientLiquidity
from relayq.relayer.jobs import relayer_in
from relayq.relayer.purchases import Purchase
from relayq.relayer.quote import QUOTE_VALID_SECONDS, quote
from relayq.relayer.relayer import Relayer
from relayq.relayer.review_routes import OPERATIONS as REVIEW_OPERATIONS
from relayq.relayer.signing import SigningRefused


def _relayer(request: web.Request) -> Relayer:
    relayer = relayer_in(request.app[PROCESS])
    if relayer is None:
        raise unavailable("relayer-unavailable", "this gateway has no relayer configured")
    return relayer


log = logging.getLogger("relayq.relayer")
# The kill switch of new purchases (relayq.core.switches).
PURCHASES_SWITCH = "purchases"
PAUSED_RETRY_AFTER_SECONDS = 30
# A purchase above this many SOL is refused before any arithmetic on it.
MAX_SOL_DIGITS = 12


def _lamports(value: Any) -> int:
    """SOL as a JSON number (or a decimal string) -> lamports; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number")
    try:
        sol = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a number") from None
    if not sol.is_finite() or sol <= 0:
        raise ValueError("must be positive with at most 9 decimal places")
    if sol.adjusted() >= MAX_SOL_DIGITS:
        raise ValueError("is beyond any bundle's limits")
    lamports = sol.scaleb(9)
    if lamports != lamports.to_integral_value():
        raise ValueError("must be positive with at most 9 decimal places")
    return int(lamports)


class PurchaseRequest(BaseModel):
    """A purchase: SOL into one bundle, for a wallet."""

    model_config = ConfigDict(extra="forbid")

    wallet: Annotated[
        str, Strict(), Field(min_length=1, max_length=64, description="The buyer's wallet, base58.")
    ]
    solAmount: Annotated[
        int,
        BeforeValidator(_lamports),
        WithJsonSchema(
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "SOL to spend, at most 9 decimals, within the bundle's limits.",
            }
        ),
    ]
    bundleId: Annotated[
        str,
        Strict(),
        Field(min_length=1, max_length=64, description="A bundle of GET /v1/bundles."),
    ]


class PauseBody(BaseModel):
    """Why purchases are paused; recorded with the switch and logged."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Strict(), Field(min_length=1, max_length=500)]


class PurchasesState(BaseModel):
    """The purchase kill switch."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    paused: bool
    reason: str | None
    since: Annotated[str | None, Field(description="When it was paused, RFC 3339.")]


class PurchaseAnswer(BaseModel):
    """The answer to a purchase."""

    model_config = ConfigDict(extra="forbid")

    taskId: Annotated[str, Field(pattern="^[0-9a-f]{32}$")]
    status: Annotated[
        Literal["pending", "queued", "active", "retrying", "completed", "failed",
                "cancelled", "needs_review", "swap_pending"],
        Field(description=(
            "`queued`: the swap landed, the transfer follows; `swap_pending`: the "
            "swap is decided later; `failed`: the swap failed (see `error`)."
        )),
    ]  # fmt: skip
    swapSignatures: list[str] | None = None
    tokens: list[dict[str, Any]] | None = None
    error: str | None = None


SolAmount = Annotated[
    int,
    BeforeValidator(_lamports),
    WithJsonSchema(
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "SOL to spend, at most 9 decimals, within the bundle's limits.",
        }
    ),
]


class QuoteQuery(BaseModel):
    """What a purchase would be: a bundle and an amount of SOL."""

    model_config = ConfigDict(extra="forbid")

    bundleId: Annotated[
        str, Field(min_length=1, max_length=64, description="A bundle of GET /v1/bundles.")
    ]
    solAmount: SolAmount


class QuoteToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str
    mint: str
    decimals: int
    solAmount: Annotated[float, Field(description="The SOL this leg spends.")]
    amount: Annotated[str, Field(description="Base units it buys, a decimal string.")]


class QuoteFees(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tipLamports: Annotated[int, Field(description="The block-engine tip the relayer pays.")]
    networkFeeLamports: Annotated[
        int, Field(description="At most this much in network base fees, paid by the relayer.")
    ]


class Quote(BaseModel):
    """What the purchase would buy now; nothing signed or recorded."""

    model_config = ConfigDict(extra="forbid")

    bundleId: str
    solAmount: float
    priceSource: str
    tokens: list[QuoteToken]
    fees: QuoteFees
    expiresAt: Annotated[str, Field(description="Until when the figures are offered, RFC 3339.")]


class BundleList(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    bundles: list[dict[str, Any]]


def _buy_request(request: web.Request, req: PurchaseRequest) -> BuyRequest:
    key = idempotency_key(request)
    if key is None:
        raise Problem(
            428,
            "idempotency-key-required",
            "a purchase needs an Idempotency-Key header, so a retried request never buys twice",
            field="Idempotency-Key",
        )
    return BuyRequest(
        wallet=req.wallet,
        lamports=req.solAmount,
        basket_id=req.bundleId,
        idempotency_key=key,
        client=request[CLIENT],
        trace=trace_of(request),
    )


def _answer(task: Task, purchase: Purchase | None, status: str) -> dict[str, Any]:
    out: dict[str, Any] = {"taskId": task.id, "status": status}
    if purchase is not None:
        out["swapSignatures"] = list(purchase.swap.get("signatures", []))
        out["tokens"] = [
            {"symbol": leg.symbol, "mint": leg.mint, "amount": str(leg.amount)}
            for leg in purchase.legs
        ]
    if status == "failed":
        out["error"] = task.last_error
    return out


async def buy_tokens(request: web.Request) -> web.Response:
    relayer = _relayer(request)
    req = _buy_request(request, body(request, PurchaseRequest))
    switch = await relayer.clients.switches.current(PURCHASES_SWITCH)
    if switch.on:
        raise Problem(503, "purchases-paused",
                      f"purchases are paused by an operator: {switch.reason}",
                      headers={"Retry-After": str(PAUSED_RETRY_AFTER_SECONDS)})  # fmt: skip
    try:
        with _pricing_problems(req.basket_id):
            async with relayer.gate:
                result = await buy(relayer, req)
    except PurchaseLimitReached as exc:
        wait = str(int(exc.spent.retry_after_seconds))
        raise Problem(429, "purchase-limit", str(exc), headers={"Retry-After": wait}) from None
    except RelayerShortOfSol as exc:
        raise unavailable("relayer-short-of-sol", str(exc)) from None
    except IdempotencyConflict as exc:
        raise Problem(409, exc.code, str(exc), field="Idempotency-Key") from None
    status = 200 if result.status == "failed" else 202
    response = web.json_response(
        _answer(result.task, result.purchase, result.status), status=status
    )
    response.headers["Location"] = f"/v1/tasks/{result.task.id}"
    if not result.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _state(switch: Switch) -> web.Response:
    return web.json_response({"paused": switch.on, "reason": switch.reason, "since": switch.since})


async def purchases_state(request: web.Request) -> web.Response:
    return _state(await request.app[CLIENTS].switches.read(PURCHASES_SWITCH))


async def pause_purchases(request: web.Request) -> web.Response:
    reason = body(request, PauseBody).reason
    switch = await request.app[CLIENTS].switches.set(PURCHASES_SWITCH, reason)
    log_event(log, logging.WARNING, "purchases paused", reason=reason)
    return _state(switch)


async def resume_purchases(request: web.Request) -> web.Response:
    switch = await request.app[CLIENTS].switches.clear(PURCHASES_SWITCH)
    log_event(log, logging.WARNING, "purchases resumed")
    return _state(switch)


async def get_quote(request: web.Request) -> web.Response:
    relayer = _relayer(request)
    q = query(request, QuoteQuery)
    with _pricing_problems(q.bundleId):
        return web.json_response(await quote(relayer, q.bundleId, q.solAmount))


@contextmanager
def _pricing_problems(bundle_id: str) -> Iterator[None]:
    """The answers a quote and a purchase share: pricing a bundle, then signing and sending.

    Subclasses of ChainError come before it: a refused signing is not a chain error.
    """
    try:
        yield
    except UnknownBasket:
        raise Problem(422, "unknown-bundle", f"no bundle {bundle_id!r}; see GET /v1/bundles",
                      field="bundleId") from None  # fmt: skip
    except InvalidPayload as exc:
        raise Problem(422, exc.code, str(exc), field=exc.field) from None
    except InsufficientLiquidity as exc:
        raise Problem(409, "insufficient-liquidity", str(exc), field="solAmount") from None
    except ChainUnavailable as exc:
        raise unavailable("chain-unavailable", f"the chain could not be reached: {exc}") from None
    except SwapRefused as exc:
        # The swap API's answer failed a check before signing: nothing was signed or sent.
        raise Problem(502, "swap-refused", str(exc)) from None
    except SigningRefused as exc:
        raise Problem(502, "signing-refused", str(exc)) from None
    except ChainError as exc:
        raise Problem(502, "chain-error", str(exc)) from None


async def list_bundles(request: web.Request) -> web.Response:
    relayer = _relayer(request)
    source = relayer.swap.price_source
    return web.json_response({"bundles": [b.to_public(source) for b in relayer.baskets.values()]})


OPERATIONS = [
    Operation(
        "POST", "/v1/buy-tokens", buy_tokens, "buyTokens",
        "Buy a bundle of tokens: swap now, transfer to the contract later", "client",
        responses={
            202: Response("Swap landed or pending", PurchaseAnswer,
                          headers=["Location", "IdempotentReplayed"]),
            200: Response("The swap failed; nothing was bought", PurchaseAnswer,
                          headers=["Location"]),
        },
        problems=[(400, ["invalid-json"]),
                  (409, ["idempotency-conflict", "insufficient-liquidity"]), 413, 415,
                  (422, ["invalid-body", "invalid-payload", "unknown-bundle"]), 428,
                  (429, ["purchase-limit"]),
                  (502, ["chain-error", "swap-refused", "signing-refused"]),
                  (503, ["chain-unavailable", "relayer-unavailable", "purchases-paused",
                         "relayer-short-of-sol", "queue-unavailable"])],
        body=PurchaseRequest,
        parameters=["IdempotencyKey", "Traceparent"],
        description=(
            "Signs the swap (one Jito bundle) and records it before sending it, waits a "
            "bounded time for it to land, then queues the token transfer. Needs an "
            "Idempotency-Key: a replay returns the same task and never swaps twice."
        ),
    ),
    Operation(
        "GET", "/v1/quote", get_quote, "getQuote",
        "What a purchase would buy now: tokens per leg, fees, expiry", "client",
        responses={200: Response("The quote", Quote)},
        problems=[(400, ["invalid-query"]), (409, ["insufficient-liquidity"]),
                  (422, ["invalid-payload", "unknown-bundle"]),
                  (502, ["chain-error", "swap-refused"]),
                  (503, ["chain-unavailable", "relayer-unavailable"])],
        query=QuoteQuery,
        description=(
            "The same plan a purchase makes, from the swap source's prices now; nothing is "
            f"signed, sent or recorded. The figures are offered for {QUOTE_VALID_SECONDS} s "
            "(`expiresAt`); a purchase made later is priced anew."
        ),
    ),
    Operation(
        "GET", "/v1/bundles", list_bundles, "listBundles",
        "The bundles for sale: tokens and weights, price source, limits", "client",
        responses={200: Response("The bundles", BundleList)},
        problems=[(503, ["relayer-unavailable"])],
    ),
    Operation(
        "GET", "/v1/admin/purchases", purchases_state, "purchasesState",
        "Whether purchases are paused (the kill switch)", "admin",
        responses={200: Response("The switch", PurchasesState)},
    ),
    Operation(
        "POST", "/v1/admin/purchases/pause", pause_purchases, "pausePurchases",
        "Stop new purchases (503 purchases-paused); transfers in flight finish", "admin",
        responses={200: Response("The switch", PurchasesState)},
        problems=[(400, ["invalid-json"]), 413, 415, (422, ["invalid-body", "invalid-payload"])],
        body=PauseBody,
        description=(
            "Shared by every gateway through Redis, read at most once a second. A gateway "
            "that cannot read Redis keeps the last value it read."
        ),
    ),
    Operation(
        "POST", "/v1/admin/purchases/resume", resume_purchases, "resumePurchases",
        "Accept purchases again", "admin",
        responses={200: Response("The switch", PurchasesState)},
    ),
    *REVIEW_OPERATIONS,
]  # fmt: skip
