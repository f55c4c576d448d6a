"""The gateway's OpenAPI 3.1 document, generated from its operations (relayq.api.contract).

Paths, parameters, request bodies and responses come from the `Operation`s the
route modules declare and the pydantic models they name; this module adds what
every operation shares: problem answers, security, the request id header.
`docs_page` renders the document as a self-contained HTML page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue, models_json_schema

from relayq.api.contract import Operation, Response
from relayq.api.docspage import docs_page
from relayq.api.problems import TITLES
from relayq.core.api_keys import KEY_ID_PATTERN
from relayq.core.owners import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_MAX_LENGTH
from relayq.core.priorities import Priority

__all__ = ["docs_page", "openapi_document"]

Schema = dict[str, Any]
Refs = Mapping[tuple[Any, JsonSchemaMode], JsonSchemaValue]

PROBLEM_MEDIA_TYPE = "application/problem+json"
REQUEST_ID_PATTERN = "^[\\x21-\\x7e]{1,128}$"
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
REF = "#/components/schemas/{model}"
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "client": [{"bearer": []}, {"apiKey": []}],
    "admin": [{"adminBearer": []}],
    "operations": [],
}
# Problems every operation of a tag may answer, besides its own.
SHARED_PROBLEMS: dict[str, list[int]] = {
    "client": [401, 403, 429, 500, 503],
    "admin": [401, 403, 500, 503],
    "operations": [],
}
# What each status means, and the codes it carries when an operation names only the status.
STATUSES: dict[int, tuple[str, list[str]]] = {
    400: ("Malformed request", ["invalid-json", "invalid-task-id", "invalid-query"]),
    401: ("No or unknown credentials", ["unauthorized"]),
    403: ("Credentials of the wrong kind", ["forbidden"]),
    404: ("Not found", ["task-not-found"]),
    409: ("Conflicts with the task's state", ["idempotency-conflict"]),
    413: ("Body over the size limit", ["payload-too-large"]),
    415: ("Body is not application/json", ["unsupported-media-type"]),
    422: ("Body or parameter refused", ["invalid-body", "invalid-payload"]),
    428: ("A required header is missing", ["idempotency-key-required"]),
    429: ("The key's rate limit", ["rate-limited"]),
    500: ("A bug; the detail names the request id", ["internal"]),
    502: ("A service behind the gateway refused the request", ["chain-error"]),
    503: (
        "A dependency is unreachable (MongoDB: nothing was accepted)",
        ["store-unavailable", "queue-unavailable"],
    ),
}
# Header components -> the header each names (others are the same word).
HEADER_NAMES = {
    "WWWAuthenticate": "WWW-Authenticate",
    "IdempotentReplayed": "Idempotent-Replayed",
    "RetryAfter": "Retry-After",
}
# Answered by the framework for any route: unknown path, wrong method.
ROUTING_CODES = ["not-found", "method-not-allowed"]


def _parameters() -> dict[str, Any]:
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
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "description": "32 lowercase hex characters.",
        },
        "KeyId": {
            "name": "keyId",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": f"^{KEY_ID_PATTERN.pattern}$"},
            "description": "A client key's public id: `key_` and 28 lowercase hex characters.",
        },
        "Priority": {
            "name": "priority",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": [p.value for p in Priority]},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                "pattern": f"^{IDEMPOTENCY_KEY.pattern}$",
            },
            "description": (
                "Scoped to the client: the same key with the same body returns the same task "
                "(Idempotent-Replayed: true); with another body, 409."
            ),
        },
        "Traceparent": {
            "name": "traceparent",
            "in": "header",
            "schema": {"type": "string", "pattern": TRACEPARENT_PATTERN},
            "description": (
                "W3C trace context, carried into the task's trace; ignored if malformed."
            ),
        },
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


def _response_headers(names: Iterable[str]) -> dict[str, Any]:
    out = {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}}
    for name in names:
        out[HEADER_NAMES.get(name, name)] = {"$ref": f"#/components/headers/{name}"}
    return out


def _problem_codes(op: Operation) -> dict[int, list[str]]:
    """Status -> the problem codes this operation may answer."""
    out: dict[int, list[str]] = {}
    for item in [*op.problems, *SHARED_PROBLEMS[op.tag]]:
        status, codes = item if isinstance(item, tuple) else (item, STATUSES[item][1])
        out.setdefault(status, [])
        out[status] += [c for c in codes if c not in out[status]]
    return dict(sorted(out.items()))


def _problem(status: int, codes: list[str], max_body_kib: int) -> dict[str, Any]:
    description = STATUSES[status][0]
    if status == 413:
        description = f"Body over {max_body_kib} KiB"
    headers = ["RetryAfter"] if status in (429, 503) else []
    if status == 401:
        headers.append("WWWAuthenticate")
    schema: Schema = {
        "allOf": [
            {"$ref": REF.format(model="Problem")},
            {"properties": {"status": {"const": status}, "code": {"enum": codes}}},
        ]
    }
    return {
        "description": f"{description}: {', '.join(f'`{c}`' for c in codes)}",
        "headers": _response_headers(headers),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
    }


def _success(response: Response, refs: Refs) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": response.description,
        "headers": _response_headers(response.headers),
    }
    if response.model is not None:
        schema: Mapping[str, Any] = refs[(response.model, "serialization")]
    elif response.schema is not None:
        schema = response.schema
    else:
        return out
    out["content"] = {response.media_type: {"schema": dict(schema)}}
    return out


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        if "anyOf" in prop:  # optional: the parameter is absent, never null
            prop = {**next(s for s in prop["anyOf"] if s.get("type") != "null"),
                    **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}  # fmt: skip
        parameter: dict[str, Any] = {"name": name, "in": "query", "schema": prop}
        if name in required:
            parameter["required"] = True
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def _operation(op: Operation, max_body_kib: int, refs: Refs) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    doc["security"] = SECURITY[op.tag]
    parameters: list[dict[str, Any]] = [
        {"$ref": f"#/components/parameters/{p}"} for p in [*op.parameters, "RequestId"]
    ]
    if op.query is not None:
        parameters[-1:-1] = _query_parameters(op.query)
    doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
            },
        }
    responses = {str(s): _success(r, refs) for s, r in op.responses.items()}
    for status, codes in _problem_codes(op).items():
        responses[str(status)] = _problem(status, codes, max_body_kib)
    doc["responses"] = dict(sorted(responses.items()))
    return doc


def _schemas(
    operations: Sequence[Operation], job_types: list[str]
) -> tuple[dict[str, Schema], Refs]:
    """The component schemas of every model the operations name, and each model's $ref."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        models += [(r.model, "serialization") for r in op.responses.values() if r.model]
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    schemas: dict[str, Schema] = dict(top.get("$defs", {}))
    if "JobRequest" in schemas:
        schemas["JobRequest"]["properties"]["type"]["enum"] = job_types
    codes = sorted({c for op in operations for cs in _problem_codes(op).values() for c in cs})
    schemas["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details; `type` is the problem base URL plus `code`.",
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": [*codes, *ROUTING_CODES]},
            "field": {
                "type": "string",
                "description": "The offending field, dotted (`payload.seconds`).",
            },
            "requestId": {"type": "string"},
        },
        "required": ["type", "title", "status", "code", "requestId"],
    }
    return dict(sorted(schemas.items())), refs


def problem_codes(operations: Sequence[Operation]) -> set[str]:
    """Every problem code the operations may answer (each needs a title in TITLES)."""
    return {c for op in operations for cs in _problem_codes(op).values() for c in cs}


def openapi_document(
    operations: Sequence[Operation], job_types: list[str], max_body_bytes: int
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`; JobRequest's `type` is an enum of `job_types`."""
    untitled = problem_codes(operations) - set(TITLES)
    assert not untitled, f"problem codes without a title: {sorted(untitled)}"
    max_body_kib = max_body_bytes // 1024
    schemas, refs = _schemas(operations, list(job_types))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, max_body_kib, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relayq API",
            "version": _version(),
            "description": (
                "Submit background jobs, follow their tasks, and administer the queues. "
                "Every error is application/problem+json (RFC 9457); unknown routes answer "
                "404 `not-found` and wrong methods 405 `method-not-allowed`. Every response "
                f"carries X-Request-Id. Bodies over {max_body_kib} KiB get 413."
            ),
        },
        "tags": [
            {"name": "client", "description": "Client routes: an API key."},
            {"name": "admin", "description": "Administration: the admin token."},
            {"name": "operations", "description": "Probes, metrics, this contract: no auth."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": _parameters(),
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
