"""Admin routes for parked purchases: list, show, resolve (relayq.relayer.review)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from relayq.api import models
from relayq.api.contract import Operation, Response, body, query
from relayq.api.jobs import ACCEPTED, accepted
from relayq.api.keys import PROCESS
from relayq.api.problems import Problem, unavailable
from relayq.api.requests import task_id
from relayq.relayer.chain.errors import ChainError, ChainUnavailable
from relayq.relayer.jobs import relayer_in
from relayq.relayer.relayer import Relayer
from relayq.relayer.review import (
    DELIVER,
    REFUND,
    ResolutionRefused,
    deliver,
    mark_completed,
    parked_purchase,
    parked_purchases,
    refund,
)


class ReviewQuery(BaseModel):
    """A page of parked purchases."""

    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=models.MAX_PAGE, description="Page size.")] = 50
    cursor: Annotated[
        str | None, Field(pattern=models.TASK_ID, description="The previous page's `nextCursor`.")
    ] = None


class Resolution(BaseModel):
    """An operator's decision on a parked purchase, recorded on its purchase record."""

    model_config = ConfigDict(extra="forbid")

    action: Annotated[
        Literal["deliver", "mark-completed", "refund"],
        Field(description=(
            "`deliver`: run the transfer of the recorded tokens (exactly once); "
            "`mark-completed`: the transfer landed, `signature` is the evidence; "
            "`refund`: return the purchase's lamports to the buyer's wallet (exactly once)."
        )),
    ]  # fmt: skip
    reason: Annotated[str, Strict(), Field(min_length=1, max_length=500)]
    operator: Annotated[
        str, Strict(), Field(min_length=1, max_length=100, description="Who decides.")
    ]
    signature: Annotated[
        str | None,
        Strict(),
        Field(
            min_length=64,
            max_length=88,
            description="With `mark-completed`: the landed transfer's signature, base58.",
        ),
    ] = None

    @model_validator(mode="after")
    def _evidence(self) -> Self:
        if self.action == "mark-completed" and self.signature is None:
            raise ValueError("signature: mark-completed needs the landed transfer's signature")
        if self.action != "mark-completed" and self.signature is not None:
            raise ValueError("signature: only mark-completed takes a signature")
        return self


class ParkedPurchase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    task: dict[str, Any]
    purchase: dict[str, Any] | None


class ParkedPage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    purchases: list[ParkedPurchase]
    nextCursor: str | None


def _relayer(request: web.Request) -> Relayer:
    relayer = relayer_in(request.app[PROCESS])
    if relayer is None:
        raise unavailable("relayer-unavailable", "this gateway has no relayer configured")
    return relayer


async def list_parked(request: web.Request) -> web.Response:
    q = query(request, ReviewQuery)
    items, cursor = await parked_purchases(_relayer(request), limit=q.limit, cursor=q.cursor)
    return web.json_response({"purchases": items, "nextCursor": cursor})


async def show_parked(request: web.Request) -> web.Response:
    try:
        return web.json_response(await parked_purchase(_relayer(request), task_id(request)))
    except ResolutionRefused as exc:
        raise Problem(exc.status, exc.code, exc.detail) from None


async def resolve(request: web.Request) -> web.Response:
    relayer, tid, r = _relayer(request), task_id(request), body(request, Resolution)
    try:
        if r.action == DELIVER:
            task = await deliver(relayer, tid, r.reason, r.operator)
        elif r.action == REFUND:
            task = await refund(relayer, tid, r.reason, r.operator)
        else:
            assert r.signature is not None
            task = await mark_completed(relayer, tid, r.signature, r.reason, r.operator)
    except ResolutionRefused as exc:
        field = "signature" if exc.code == "evidence-refused" else None
        raise Problem(exc.status, exc.code, exc.detail, field=field) from None
    except ChainUnavailable as exc:
        raise unavailable("chain-unavailable", f"the chain could not be reached: {exc}") from None
    except ChainError as exc:
        raise Problem(502, "chain-error", str(exc)) from None
    if r.action in (DELIVER, REFUND):
        return accepted(task)
    return web.json_response(task.to_public())


BAD_ID = (400, ["invalid-task-id"])
OPERATIONS = [
    Operation(
        "GET", "/v1/admin/purchases/review", list_parked, "listParkedPurchases",
        "Parked purchases (needs_review) with what landed, newest first", "admin",
        responses={200: Response("One page", ParkedPage)},
        problems=[(400, ["invalid-query"]), (503, ["relayer-unavailable"])],
        query=ReviewQuery,
    ),
    Operation(
        "GET", "/v1/admin/purchases/review/{taskId}", show_parked, "getParkedPurchase",
        "One purchase's task and record, with the chain's word on each signature", "admin",
        responses={200: Response("The purchase", ParkedPurchase)},
        problems=[BAD_ID, (404, ["purchase-not-found"]), (503, ["relayer-unavailable"])],
        parameters=["TaskId"],
    ),
    Operation(
        "POST", "/v1/admin/purchases/review/{taskId}/resolve", resolve, "resolvePurchase",
        "Resolve a parked purchase: deliver, refund, or mark completed on a landed signature",
        "admin",
        responses={
            202: ACCEPTED,
            200: Response("mark-completed: the completed task", models.Task),
        },
        problems=[(400, ["invalid-json", "invalid-task-id"]),
                  (404, ["purchase-not-found"]),
                  (409, ["purchase-not-parked", "purchase-already-resolved",
                         "purchase-not-deliverable", "purchase-changed", "transfer-may-land",
                         "refund-decided", "purchase-delivered", "swap-undecided"]),
                  413, 415, (422, ["invalid-body", "invalid-payload", "evidence-refused"]),
                  (502, ["chain-error"]), (503, ["chain-unavailable", "relayer-unavailable"])],
        body=Resolution, parameters=["TaskId"],
        description=(
            "The decision (action, reason, operator, time) is recorded on the purchase "
            "record once per parking. `deliver` releases the task: the transfer of the "
            "recorded tokens runs by the exactly-once protocol (a transfer that failed at "
            "finalized is signed anew; the signing cap starts over). `mark-completed` reads "
            "`signature` at finalized: it must have succeeded, carry the purchase's memo "
            "and credit the contract with exactly the recorded amounts; then the task "
            "completes and the purchase is recorded in the buyer's holdings. `refund` "
            "(refused once the tokens were delivered, `purchase-delivered`, and while a "
            "recorded transfer can still land) releases the task to send the purchase's "
            "lamports back to the buyer's wallet by the same exactly-once protocol; the "
            "task completes with `result.outcome: refunded`. Once a refund was decided, "
            "`deliver` and `mark-completed` are refused (`refund-decided`)."
        ),
    ),
]  # fmt: skip
