"""The relayer's gateway routes: buy tokens (swap now, transfer later) and list the baskets.

The gateway mounts them (`mount`) when `relayq.relayer.jobs` is among its job
modules; without a configured chain they answer 503 relayer-unavailable.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from relayq.api.keys import CLIENT, PROCESS
from relayq.api.problems import Problem, unavailable
from relayq.api.requests import json_object, trace_of
from relayq.core.jobs import InvalidPayload, Task
from relayq.core.service import IDEMPOTENCY_KEY_MAX_LENGTH
from relayq.core.store import IdempotencyConflict
from relayq.relayer.baskets import LAMPORTS_PER_SOL
from relayq.relayer.buy import BuyRequest, UnknownBasket, buy
from relayq.relayer.chain.errors import ChainError, ChainUnavailable, SwapRefused
from relayq.relayer.chain.swap import InsufficientLiquidity
from relayq.relayer.jobs import relayer_in
from relayq.relayer.purchases import Purchase
from relayq.relayer.relayer import Relayer


def mount(app: web.Application) -> None:
    app.add_routes([web.post("/v1/buy-tokens", buy_tokens), web.get("/v1/bundles", list_bundles)])


def _relayer(request: web.Request) -> Relayer:
    relayer = relayer_in(request.app[PROCESS])
    if relayer is None:
        raise unavailable("relayer-unavailable", "this gateway has no relayer configured")
    return relayer


def _lamports(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Problem(422, "invalid-payload", "solAmount must be a number", field="solAmount")
    try:
        sol = Decimal(str(value))
    except InvalidOperation:
        raise Problem(
            422, "invalid-payload", "solAmount must be a number", field="solAmount"
        ) from None
    lamports = sol * LAMPORTS_PER_SOL
    if not sol.is_finite() or sol <= 0 or lamports != lamports.to_integral_value():
        raise Problem(
            422,
            "invalid-payload",
            "solAmount must be positive with at most 9 decimal places",
            field="solAmount",
        )
    return int(lamports)


def _buy_request(request: web.Request, body: dict[str, Any]) -> BuyRequest:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise Problem(
            428,
            "idempotency-key-required",
            "a purchase needs an Idempotency-Key header, so a retried request never buys twice",
            field="Idempotency-Key",
        )
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise Problem(
            422,
            "invalid-payload",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters",
            field="Idempotency-Key",
        )
    unknown = set(body) - {"wallet", "solAmount", "bundleId"}
    if unknown:
        raise Problem(
            422, "invalid-body", f"unknown fields: {sorted(unknown)}", field=sorted(unknown)[0]
        )
    for name in ("wallet", "bundleId"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise Problem(422, "invalid-payload", f"{name} must be a non-empty string", field=name)
    if "solAmount" not in body:
        raise Problem(422, "invalid-payload", "solAmount is required", field="solAmount")
    return BuyRequest(
        wallet=body["wallet"],
        lamports=_lamports(body["solAmount"]),
        basket_id=body["bundleId"],
        idempotency_key=key,
        idempotency_scope=request[CLIENT],
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
    req = _buy_request(request, await json_object(request))
    try:
        async with relayer.gate:
            result = await buy(relayer, req)
    except UnknownBasket:
        raise Problem(422, "unknown-bundle", f"no bundle {req.basket_id!r}; see GET /v1/bundles",
                      field="bundleId") from None  # fmt: skip
    except InvalidPayload as exc:
        raise Problem(422, exc.code, str(exc), field=exc.field) from None
    except IdempotencyConflict as exc:
        raise Problem(409, exc.code, str(exc), field="Idempotency-Key") from None
    except InsufficientLiquidity as exc:
        raise Problem(409, "insufficient-liquidity", str(exc), field="solAmount") from None
    except ChainUnavailable as exc:
        raise unavailable("chain-unavailable", f"the chain could not be reached: {exc}") from None
    except SwapRefused as exc:
        # The swap API's answer failed a check before signing: nothing was signed or sent.
        raise Problem(502, "swap-refused", str(exc)) from None
    except ChainError as exc:
        raise Problem(502, "chain-error", str(exc)) from None
    status = 200 if result.status == "failed" else 202
    response = web.json_response(
        _answer(result.task, result.purchase, result.status), status=status
    )
    response.headers["Location"] = f"/v1/tasks/{result.task.id}"
    if not result.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def list_bundles(request: web.Request) -> web.Response:
    relayer = _relayer(request)
    source = relayer.swap.price_source
    return web.json_response({"bundles": [b.to_public(source) for b in relayer.baskets.values()]})
