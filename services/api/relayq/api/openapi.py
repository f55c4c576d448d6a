"""The gateway's contract as OpenAPI 3.1: docs/api.md in machine-readable form.

`openapi_document` builds it for the registered job types; `docs_page` renders
it as a self-contained HTML page (relayq.api.docspage).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from relayq.api.docspage import docs_page
from relayq.core.jobs import JOB_TYPE_MAX_LENGTH, TaskState
from relayq.core.priorities import Priority
from relayq.core.service import IDEMPOTENCY_KEY_MAX_LENGTH, MAX_DELAY_SECONDS
from relayq.core.store import MAX_PAGE

__all__ = ["docs_page", "openapi_document"]

Schema = dict[str, Any]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TASK_ID_PATTERN = "^[0-9a-f]{32}$"
REQUEST_ID_PATTERN = "^[\\x21-\\x7e]{1,128}$"
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
MAX_BODY_KIB = 512
CLIENT_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminBearer": []}]
PRIORITIES = [p.value for p in Priority]
STATES = [s.value for s in TaskState]

# Status code -> (description, problem codes it may carry).
ERRORS: dict[int, tuple[str, list[str]]] = {
    400: ("Malformed request", ["invalid-json", "invalid-task-id", "invalid-query"]),
    401: ("No or unknown credentials", ["unauthorized"]),
    403: ("Credentials of the wrong kind", ["forbidden"]),
    404: ("No such task, or not a dead letter", ["task-not-found", "not-a-dead-letter"]),
    409: (
        "Idempotency-Key already used with another body, or not enough liquidity",
        ["idempotency-conflict", "insufficient-liquidity"],
    ),
    413: (f"Body over {MAX_BODY_KIB} KiB", ["payload-too-large"]),
    415: ("Body is not application/json", ["unsupported-media-type"]),
    422: (
        "Body or parameter refused",
        [
            "invalid-body",
            "unknown-job-type",
            "invalid-payload",
            "invalid-priority",
            "internal-job-type",
            "unknown-bundle",
        ],
    ),
    428: ("A purchase without an Idempotency-Key", ["idempotency-key-required"]),
    429: ("The key's rate limit", ["rate-limited"]),
    500: ("A bug; the detail names the request id", ["internal"]),
    502: ("A chain service refused the request", ["chain-error", "swap-refused"]),
    503: (
        "MongoDB unreachable (nothing was accepted), Redis unreachable for an admin route, "
        "the chain unreachable, or no relayer configured",
        ["store-unavailable", "queue-unavailable", "chain-unavailable", "relayer-unavailable"],
    ),
}
ALL_CODES = [code for _, codes in ERRORS.values() for code in codes] + [
    "not-found",
    "method-not-allowed",
]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def _object(properties: Mapping[str, Schema], required: Iterable[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


def _schemas(job_types: list[str]) -> dict[str, Schema]:
    timestamp: Schema = {"type": "string", "format": "date-time"}
    task_id: Schema = {"type": "string", "pattern": TASK_ID_PATTERN}
    priority: Schema = {"type": "string", "enum": PRIORITIES}
    count: Schema = {"type": "integer", "minimum": 0}
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; `type` is the problem base URL plus `code`.",
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "code": {"type": "string", "enum": ALL_CODES},
                "field": {
                    "type": "string",
                    "description": "The offending field, dotted (`payload.seconds`).",
                },
                "requestId": {"type": "string"},
            },
            "required": ["type", "title", "status", "code", "requestId"],
        },
        "JobRequest": {
            **_object(
                {
                    "type": {
                        "type": "string",
                        "enum": job_types,
                        "description": "A registered job type.",
                    },
                    "payload": {
                        "type": "object",
                        "default": {},
                        "description": "The handler's input; the job type may refuse it.",
                    },
                    "priority": {**priority, "description": "Default: the type's."},
                    "runAt": {
                        "type": "string",
                        "format": "date-time",
                        "description": "Earliest start, RFC 3339 with an offset.",
                    },
                    "delaySeconds": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": MAX_DELAY_SECONDS,
                        "description": "Earliest start from now; not together with runAt.",
                    },
                    "maxAttempts": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 100,
                        "description": "Default: the type's or the class's.",
                    },
                },
                required=["type"],
            ),
            "not": {"required": ["runAt", "delaySeconds"]},
        },
        "TaskAccepted": _object(
            {
                "taskId": task_id,
                "status": {
                    "type": "string",
                    "enum": ["queued", "pending"],
                    "description": "`pending`: recorded, dispatched once Redis is back.",
                },
                "priority": priority,
            }
        ),
        "Task": _object(
            {
                "taskId": task_id,
                "type": {"type": "string", "description": "The job type."},
                "priority": priority,
                "state": {
                    "type": "string",
                    "enum": STATES,
                    "description": "`failed`: attempts exhausted, a dead letter.",
                },
                "attempts": {**count, "description": "Runs started so far."},
                "maxAttempts": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Runs allowed; grows when a dead letter is retried.",
                },
                "lastError": {
                    "type": ["string", "null"],
                    "description": "The most recent failure.",
                },
                "result": {"description": "What the handler returned (any JSON value)."},
                "payload": {"type": "object", "description": "The handler's input."},
                "createdAt": timestamp,
                "queuedAt": _nullable(timestamp),
                "startedAt": {**_nullable(timestamp), "description": "Latest run's start."},
                "finishedAt": _nullable(timestamp),
                "runAt": {**_nullable(timestamp), "description": "Earliest start, if delayed."},
                "purchase": {
                    "type": ["object", "null"],
                    "description": (
                        "token_transfer tasks only: the purchase, its swap and transfer "
                        "signatures, and what the chain says of each now."
                    ),
                },
            },
            required=[
                "taskId",
                "type",
                "priority",
                "state",
                "attempts",
                "maxAttempts",
                "lastError",
                "result",
                "payload",
                "createdAt",
                "queuedAt",
                "startedAt",
                "finishedAt",
                "runAt",
            ],
        ),
        "BuyRequest": _object(
            {
                "wallet": {"type": "string", "description": "The buyer's wallet, base58."},
                "solAmount": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "SOL to spend, at most 9 decimals, within the bundle's limits.",
                },
                "bundleId": {"type": "string", "description": "A bundle of GET /v1/bundles."},
            }
        ),
        "Purchase": {
            "type": "object",
            "properties": {
                "taskId": task_id,
                "status": {
                    "type": "string",
                    "enum": [*STATES, "swap_pending"],
                    "description": (
                        "`queued`: the swap landed, the transfer follows; `swap_pending`: the "
                        "swap is decided later; `failed`: the swap failed (see `error`)."
                    ),
                },
                "swapSignatures": {"type": "array", "items": {"type": "string"}},
                "tokens": {"type": "array", "items": {"type": "object"}},
                "error": {"type": ["string", "null"]},
            },
            "required": ["taskId", "status"],
        },
        "BundleList": _object({"bundles": {"type": "array", "items": {"type": "object"}}}),
        "TaskPage": _object(
            {
                "tasks": {"type": "array", "items": _ref("Task"), "maxItems": MAX_PAGE},
                "nextCursor": {
                    "type": ["string", "null"],
                    "pattern": TASK_ID_PATTERN,
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            }
        ),
        "Queue": _object(
            {
                "priority": priority,
                "waiting": count,
                "active": count,
                "delayed": count,
                "dead": count,
                "paused": {"type": "boolean"},
                "backlog": count,
                "oldestWaitingAgeSeconds": {"type": "number", "minimum": 0},
            }
        ),
        "Queues": _object(
            {
                "queues": {
                    "type": "array",
                    "items": _ref("Queue"),
                    "minItems": len(PRIORITIES),
                    "maxItems": len(PRIORITIES),
                    "description": "All five, in priority order.",
                }
            }
        ),
        "QueueState": _object({"priority": priority, "paused": {"type": "boolean"}}),
        "Retried": _object({"retried": {"type": "integer", "minimum": 0, "maximum": 1000}}),
        "Health": _object({"status": {"type": "string", "const": "ok"}}),
        "Readiness": _object(
            {
                "status": {"type": "string", "enum": ["ready", "unready"]},
                "redis": {"type": "string", "enum": ["ok", "unreachable"]},
                "mongo": {"type": "string", "enum": ["ok", "unreachable"]},
            }
        ),
    }


def _headers() -> dict[str, Any]:
    def header(description: str, schema: Schema, required: bool = True) -> dict[str, Any]:
        return {"description": description, "required": required, "schema": schema}

    return {
        "XRequestId": header(
            "The client's request id (at most 128 visible characters), else a new one.",
            {"type": "string", "pattern": REQUEST_ID_PATTERN},
        ),
        "RetryAfter": header("Whole seconds to wait.", {"type": "integer", "minimum": 1}),
        "WWWAuthenticate": header("The scheme to use.", {"type": "string", "const": "Bearer"}),
        "Location": header(
            "The task's status URL.", {"type": "string", "pattern": "^/v1/tasks/[0-9a-f]{32}$"}
        ),
        "IdempotentReplayed": header(
            "Present when the Idempotency-Key returned an existing task.",
            {"type": "string", "const": "true"},
            required=False,
        ),
    }


def _parameters() -> dict[str, Any]:
    def page(name: str, schema: Schema, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": schema, "description": description}

    return {
        "RequestId": {
            "name": "X-Request-Id",
            "in": "header",
            "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
            "description": "Echoed back; generated when absent or invalid.",
        },
        "TaskId": {
            "name": "taskId",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": TASK_ID_PATTERN},
            "description": "32 lowercase hex characters.",
        },
        "Priority": {
            "name": "priority",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": PRIORITIES},
        },
        "Limit": page(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
            f"Page size, 1..{MAX_PAGE}.",
        ),
        "Cursor": page(
            "cursor",
            {"type": "string", "pattern": TASK_ID_PATTERN},
            "The previous page's `nextCursor`.",
        ),
        "Type": page(
            "type",
            {"type": "string", "minLength": 1, "maxLength": JOB_TYPE_MAX_LENGTH},
            "Only tasks of this job type.",
        ),
        "State": page("state", {"type": "string", "enum": STATES}, "Only tasks in this state."),
    }


def _json(schema: Schema, description: str, **headers: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _response_headers(**headers),
        "content": {"application/json": {"schema": schema}},
    }


def _response_headers(**headers: str) -> dict[str, Any]:
    out = {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}}
    for name, component in headers.items():
        out[name.replace("_", "-")] = {"$ref": f"#/components/headers/{component}"}
    return out


def _problem(status: int, codes: list[str]) -> dict[str, Any]:
    description = ERRORS[status][0]
    headers: dict[str, str] = {}
    if status in (429, 503):
        headers["Retry_After"] = "RetryAfter"
    if status == 401:
        headers["WWW_Authenticate"] = "WWWAuthenticate"
    schema: Schema = {
        "allOf": [
            _ref("Problem"),
            {"properties": {"status": {"const": status}, "code": {"enum": codes}}},
        ]
    }
    return {
        "description": f"{description}: {', '.join(f'`{c}`' for c in codes)}",
        "headers": _response_headers(**headers),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
    }


def _errors(*spec: int | tuple[int, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in spec:
        status, codes = item if isinstance(item, tuple) else (item, ERRORS[item][1])
        out[str(status)] = _problem(status, codes)
    return dict(sorted(out.items()))


def _operation(
    op_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    security: list[dict[str, list[str]]],
    parameters: Iterable[str] = (),
    description: str | None = None,
    request_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    op["security"] = security
    op["parameters"] = [
        {"$ref": f"#/components/parameters/{p}"} for p in [*parameters, "RequestId"]
    ]
    if request_body is not None:
        op["requestBody"] = request_body
    op["responses"] = dict(sorted(responses.items()))
    return op


def _client(op_id: str, summary: str, ok: dict[str, Any], *errors: Any, **kw: Any) -> Any:
    """A client route: client key auth, rate limited, needs MongoDB."""
    responses = {**ok, **_errors(*errors, 401, 403, 429, 500, 503)}
    return _operation(op_id, "client", summary, responses, security=CLIENT_SECURITY, **kw)


def _admin(op_id: str, summary: str, ok: dict[str, Any], *errors: Any, **kw: Any) -> Any:
    responses = {**ok, **_errors(*errors, 401, 403, 500, 503)}
    return _operation(op_id, "admin", summary, responses, security=ADMIN_SECURITY, **kw)


def _ops(op_id: str, summary: str, responses: dict[str, Any], **kw: Any) -> Any:
    return _operation(op_id, "operations", summary, responses, security=[], **kw)


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _response_headers(),
        "content": {media_type: {"schema": {"type": "string"}}},
    }


def _paths() -> dict[str, Any]:
    accepted = _json(_ref("TaskAccepted"), "Accepted", Location="Location")
    task_page = {"200": _json(_ref("TaskPage"), "One page, newest first")}
    not_found = (404, ["task-not-found"])
    dead_404 = (404, ["task-not-found", "not-a-dead-letter"])
    bad_id = (400, ["invalid-task-id"])
    bad_query = (400, ["invalid-query"])
    bad_priority = (422, ["invalid-priority"])
    submit = _client(
        "submitJob",
        "Submit a job",
        {
            "202": {
                **accepted,
                "headers": _response_headers(
                    Location="Location", Idempotent_Replayed="IdempotentReplayed"
                ),
            }
        },
        (400, ["invalid-json"]),
        409,
        413,
        415,
        422,
        description=(
            "Records the task in MongoDB, then dispatches it through Redis. `pending` means "
            "Redis was unreachable: the task is recorded and dispatched when Redis returns. "
            "The request's X-Request-Id and traceparent travel into the task's `trace`. "
            f"Bodies over {MAX_BODY_KIB} KiB get 413."
        ),
        parameters=["IdempotencyKey", "Traceparent"],
        request_body={
            "required": True,
            "content": {"application/json": {"schema": _ref("JobRequest")}},
        },
    )

    def queue_state(paused: bool) -> dict[str, Any]:
        schema = {"allOf": [_ref("QueueState"), {"properties": {"paused": {"const": paused}}}]}
        return _json(schema, "The queue's state now")

    return {
        "/v1/jobs": {"post": submit},
        "/v1/buy-tokens": {
            "post": _client(
                "buyTokens",
                "Buy a bundle of tokens: swap now, transfer to the contract later",
                {
                    "202": _json(_ref("Purchase"), "Swap landed or pending", Location="Location"),
                    "200": _json(_ref("Purchase"), "The swap failed; nothing was bought"),
                },
                (400, ["invalid-json"]),
                409,
                413,
                415,
                (422, ["invalid-body", "invalid-payload", "unknown-bundle"]),
                428,
                502,
                description=(
                    "Signs the swap (one Jito bundle) and records it before sending it, waits a "
                    "bounded time for it to land, then queues the token transfer. Needs an "
                    "Idempotency-Key: a replay returns the same task and never swaps twice."
                ),
                parameters=["IdempotencyKey", "Traceparent"],
                request_body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BuyRequest")}},
                },
            )
        },
        "/v1/bundles": {
            "get": _client(
                "listBundles",
                "The bundles for sale: tokens and weights, price source, limits",
                {"200": _json(_ref("BundleList"), "The bundles")},
            )
        },
        "/v1/tasks": {
            "get": _client(
                "listTasks",
                "List tasks, newest first",
                task_page,
                bad_query,
                parameters=["State", "Type", "Limit", "Cursor"],
            )
        },
        "/v1/tasks/{taskId}": {
            "get": _client(
                "getTask",
                "A task's status",
                {"200": _json(_ref("Task"), "The task")},
                bad_id,
                not_found,
                parameters=["TaskId"],
            )
        },
        "/v1/admin/queues": {
            "get": _admin(
                "listQueues",
                "Every priority's queue",
                {"200": _json(_ref("Queues"), "All five queues, in priority order")},
            )
        },
        "/v1/admin/queues/{priority}/pause": {
            "post": _admin(
                "pauseQueue",
                "Stop workers claiming from a priority",
                {"200": queue_state(True)},
                bad_priority,
                parameters=["Priority"],
            )
        },
        "/v1/admin/queues/{priority}/resume": {
            "post": _admin(
                "resumeQueue",
                "Let workers claim from a priority again",
                {"200": queue_state(False)},
                bad_priority,
                parameters=["Priority"],
            )
        },
        "/v1/admin/dead-letters": {
            "get": _admin(
                "listDeadLetters",
                "List dead letters (failed tasks), newest first",
                task_page,
                bad_query,
                parameters=["Type", "Limit", "Cursor"],
            )
        },
        "/v1/admin/dead-letters/retry": {
            "post": _admin(
                "retryDeadLetters",
                "Retry dead letters, at most 1000 per call",
                {"200": _json(_ref("Retried"), "How many were retried")},
                parameters=["Type"],
            )
        },
        "/v1/admin/dead-letters/{taskId}/retry": {
            "post": _admin(
                "retryDeadLetter",
                "Retry one dead letter with a fresh attempt budget",
                {"202": accepted},
                bad_id,
                dead_404,
                parameters=["TaskId"],
            )
        },
        "/v1/admin/dead-letters/{taskId}": {
            "delete": _admin(
                "deleteDeadLetter",
                "Delete one dead letter",
                {"204": {"description": "Deleted", "headers": _response_headers()}},
                bad_id,
                dead_404,
                parameters=["TaskId"],
            )
        },
        "/healthz": {
            "get": _ops(
                "healthz",
                "Liveness",
                {"200": _json(_ref("Health"), "The process serves")},
            )
        },
        "/readyz": {
            "get": _ops(
                "readyz",
                "Readiness: Redis and MongoDB reachable",
                {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("Readiness"),
                                {
                                    "properties": {
                                        "status": {"const": "ready"},
                                        "redis": {"const": "ok"},
                                        "mongo": {"const": "ok"},
                                    }
                                },
                            ]
                        },
                        "Ready",
                    ),
                    "503": _json(
                        {
                            "allOf": [
                                _ref("Readiness"),
                                {"properties": {"status": {"const": "unready"}}},
                            ]
                        },
                        "A dependency is unreachable; it is named `unreachable`",
                    ),
                },
            )
        },
        "/metrics": {
            "get": _ops(
                "metrics",
                "Prometheus metrics",
                {"200": _text("text/plain", "Prometheus text exposition format")},
                description=(
                    "relayq_api_requests_total{method,route,status}, "
                    "relayq_api_request_seconds{route}, and the job metrics."
                ),
            )
        },
        "/openapi.json": {
            "get": _ops(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            )
        },
        "/docs": {"get": _ops("docs", "This API, as a page", {"200": _text("text/html", "HTML")})},
    }


def openapi_document(job_types: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway; `type` is an enum of `job_types`."""
    parameters = _parameters()
    parameters["IdempotencyKey"] = {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
        "description": (
            "Scoped to the client: the same key with the same body returns the same task "
            "(202, Idempotent-Replayed: true); with another body, 409."
        ),
    }
    parameters["Traceparent"] = {
        "name": "traceparent",
        "in": "header",
        "schema": {"type": "string", "pattern": TRACEPARENT_PATTERN},
        "description": "W3C trace context, carried into the task's trace; ignored if malformed.",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relayq API",
            "version": _version(),
            "description": (
                "Submit background jobs, follow their tasks, and administer the queues. "
                "Every error is application/problem+json (RFC 9457); unknown routes answer "
                "404 `not-found` and wrong methods 405 `method-not-allowed`. Every response "
                "carries X-Request-Id."
            ),
        },
        "tags": [
            {"name": "client", "description": "Client routes: an API key."},
            {"name": "admin", "description": "Administration: the admin token."},
            {"name": "operations", "description": "Probes, metrics, this contract: no auth."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(list(job_types)),
            "parameters": parameters,
            "headers": _headers(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A client API key: `Authorization: Bearer <key>`.",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "A client API key, as X-API-Key.",
                },
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token: `Authorization: Bearer <token>`.",
                },
            },
        },
    }


def _version() -> str:
    try:
        return metadata.version("relayq-api")
    except metadata.PackageNotFoundError:
        return "0.0.0"
