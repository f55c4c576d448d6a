"""RFC 9457 problem details: every error the gateway returns."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_BASE = "https://relayq.io/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

TITLES = {
    "invalid-json": "Body is not JSON",
    "invalid-task-id": "Invalid task id",
    "invalid-query": "Invalid query parameter",
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed",
    "task-not-found": "Task not found",
    "not-a-dead-letter": "Task is not a dead letter",
    "invalid-task-state": "The task's state does not allow this",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "idempotency-conflict": "Idempotency key reused with another body",
    "payload-too-large": "Request body too large",
    "unsupported-media-type": "Body must be application/json",
    "invalid-body": "Invalid request body",
    "unknown-job-type": "Unknown job type",
    "invalid-payload": "Invalid job",
    "invalid-priority": "Unknown priority",
    "rate-limited": "Too many requests",
    "store-unavailable": "Task store unavailable",
    "queue-unavailable": "Queue unavailable",
    "internal-job-type": "Job type not open to clients",
    "idempotency-key-required": "Idempotency-Key header required",
    "unknown-bundle": "Unknown bundle",
    "insufficient-liquidity": "Not enough liquidity for this purchase",
    "relayer-unavailable": "Relayer not configured",
    "purchases-paused": "Purchases are paused",
    "purchase-limit": "Purchase limit reached for this window",
    "relayer-short-of-sol": "The relayer's SOL cannot pay for this purchase",
    "chain-unavailable": "Chain unavailable",
    "chain-error": "Chain service refused the request",
    "swap-refused": "Swap instructions refused before signing",
    "signing-refused": "The signer refused this transaction",
    "purchase-not-found": "Purchase not found",
    "purchase-not-parked": "Purchase is not parked for review",
    "purchase-already-resolved": "This parking of the purchase was already resolved",
    "purchase-not-deliverable": "The purchase's swap did not land in full",
    "purchase-changed": "The purchase changed meanwhile",
    "transfer-may-land": "The recorded transfer can still land",
    "refund-decided": "A refund of the purchase was decided: its tokens are not delivered",
    "purchase-delivered": "The purchase's tokens were delivered: it is not refunded",
    "swap-undecided": "The purchase's swap can still land",
    "evidence-refused": "The signature given is no evidence of this purchase's transfer",
    "invalid-key-id": "Invalid key id",
    "invalid-client-id": "Invalid client id",
    "key-not-found": "API key not found",
    "key-revoked": "API key is revoked",
    "key-expired": "API key has expired",
    "key-rotated": "API key was already rotated",
    "internal": "Internal error",
}


RETRY_AFTER_OUTAGE_SECONDS = 5


def unavailable(code: str, detail: str) -> Problem:
    """A 503 for a dependency outage, telling the client when to try again."""
    return Problem(503, code, detail, headers={"Retry-After": str(RETRY_AFTER_OUTAGE_SECONDS)})


class Problem(Exception):
    """An error answer; raise it from a handler, the middleware renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.headers = headers or {}

    def response(self, request_id: str) -> web.Response:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": TITLES.get(self.code, self.code),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "requestId": request_id,
        }
        if self.field is not None:
            body["field"] = self.field
        return web.Response(
            status=self.status,
            text=json.dumps(body),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )
