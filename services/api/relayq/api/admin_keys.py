"""Admin routes for client API keys: create (the secret shown once), list, rotate
with a grace period, revoke; and the audit trail of those changes.

The records and the audit live in relayq.core.api_keys, which the CLI uses too.
Every change is audited with actor `admin`, the caller's source address and the
request id; refused changes (unknown, revoked, expired or rotated keys) too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field, Strict

from relayq.api.contract import Operation, Response, body, query
from relayq.api.keys import CLIENTS, KEYRING, REQUEST_ID, SETTINGS
from relayq.api.limits import source_of
from relayq.api.models import Answer, Request
from relayq.api.problems import Problem
from relayq.api.requests import key_id
from relayq.core.api_keys import (
    AUDIT_ID_PATTERN,
    DEFAULT_GRACE_SECONDS,
    KEY_ID_PATTERN,
    LABEL_MAX_LENGTH,
    MAX_GRACE_SECONDS,
    MAX_PAGE,
    REASON_MAX_LENGTH,
    Actor,
    ApiKeys,
    KeyRefused,
    now,
)
from relayq.core.owners import CLIENT_ID

KEY_ID = f"^{KEY_ID_PATTERN.pattern}$"
AUDIT_ID = f"^{AUDIT_ID_PATTERN.pattern}$"
CLIENT = f"^{CLIENT_ID.pattern}$"
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _whole(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; booleans stay refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


KeyId = Annotated[str, Field(pattern=KEY_ID)]
ClientId = Annotated[str, Field(pattern=CLIENT)]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description=f"Page size, 1..{MAX_PAGE}.")]


# -- models ---------------------------------------------------------------------


class KeyCreate(Request):
    """A new key: whose it is and what it is for."""

    client: Annotated[str, Strict(), Field(pattern=CLIENT, description="The client id.")]
    label: Annotated[
        str,
        Strict(),
        Field(min_length=1, max_length=LABEL_MAX_LENGTH, pattern=NO_CONTROL,
              description="What the key is for (shown in listings)."),
    ]  # fmt: skip


class KeyRotate(Request):
    graceSeconds: Annotated[
        int,
        BeforeValidator(_whole),
        Strict(),
        Field(ge=0, le=MAX_GRACE_SECONDS,
              description="How long the old key keeps working (0: it stops now)."),
    ] = DEFAULT_GRACE_SECONDS  # fmt: skip


class KeyRevoke(Request):
    reason: Annotated[
        str,
        Strict(),
        Field(min_length=1, max_length=REASON_MAX_LENGTH, pattern=NO_CONTROL,
              description="Why; recorded on the key and in the audit."),
    ]  # fmt: skip


class KeyQuery(Request):
    client: Annotated[ClientId | None, Field(description="Only this client's keys.")] = None
    limit: Limit = 100
    cursor: Annotated[KeyId | None, Field(description="The previous page's `nextCursor`.")] = None


class AuditQuery(Request):
    keyId: Annotated[KeyId | None, Field(description="Only entries about this key.")] = None
    client: Annotated[ClientId | None, Field(description="Only this client's entries.")] = None
    limit: Limit = 100
    cursor: Annotated[
        str | None, Field(pattern=AUDIT_ID, description="The previous page's `nextCursor`.")
    ] = None


class ApiKey(Answer):
    """A key's record; never its secret or its hash."""

    keyId: KeyId
    client: str
    label: str
    state: Annotated[
        Literal["active", "expiring", "expired", "revoked"],
        Field(description="`expiring`: rotated, working until `expiresAt`."),
    ]
    createdAt: datetime
    expiresAt: datetime | None
    revokedAt: datetime | None
    revokedReason: str | None
    rotatedFrom: Annotated[KeyId | None, Field(description="The key this one replaced.")]
    rotatedTo: Annotated[KeyId | None, Field(description="The key that replaced this one.")]


class IssuedKey(Answer):
    secret: Annotated[
        str,
        Field(pattern=r"^rq_[A-Za-z0-9_-]{43}$",
              description="The key to give the client: shown this once, stored only hashed."),
    ]  # fmt: skip
    key: ApiKey


class RotatedKey(IssuedKey):
    previous: Annotated[ApiKey, Field(description="The old key, working until its `expiresAt`.")]


class RevokedKey(Answer):
    key: ApiKey


class KeyPage(Answer):
    keys: Annotated[list[ApiKey], Field(max_length=MAX_PAGE)]
    nextCursor: Annotated[
        KeyId | None, Field(description="Pass as `cursor` for the next page; null on the last.")
    ]


class AuditEntry(Answer):
    id: Annotated[str, Field(pattern=AUDIT_ID)]
    at: datetime
    actor: Annotated[str, Field(description="`admin` (the gateway) or `cli`.")]
    action: Literal["create", "rotate", "revoke"]
    outcome: Annotated[
        Literal["ok", "refused"], Field(description="`refused`: `details.code` says why.")
    ]
    keyId: KeyId | None
    client: str | None
    reason: str | None
    source: Annotated[
        str | None, Field(description="The caller's address, or the CLI's user@host.")
    ]
    requestId: str | None
    details: Annotated[dict[str, Any], Field(description="The action's particulars.")]


class AuditPage(Answer):
    entries: Annotated[list[AuditEntry], Field(max_length=MAX_PAGE)]
    nextCursor: Annotated[
        str | None,
        Field(
            pattern=AUDIT_ID, description="Pass as `cursor` for the next page; null on the last."
        ),
    ]


# -- handlers -------------------------------------------------------------------


def _keys(request: web.Request) -> ApiKeys:
    return ApiKeys(request.app[CLIENTS].store.tasks.database)


def _actor(request: web.Request) -> Actor:
    source = source_of(request, request.app[SETTINGS].source_header)
    return Actor("admin", source=source, request_id=request[REQUEST_ID])


def _problem(exc: KeyRefused) -> Problem:
    return Problem(exc.status, exc.code, str(exc))


async def create_key(request: web.Request) -> web.Response:
    new = body(request, KeyCreate)
    try:
        issued = await _keys(request).create(new.client, new.label, _actor(request))
    except KeyRefused as exc:
        raise _problem(exc) from None
    return web.json_response(
        {"secret": issued.secret, "key": issued.key.to_public(now())}, status=201
    )


async def list_keys(request: web.Request) -> web.Response:
    q = query(request, KeyQuery)
    page = await _keys(request).list(client=q.client, limit=q.limit, cursor=q.cursor)
    at = now()
    return web.json_response(
        {"keys": [k.to_public(at) for k in page.items], "nextCursor": page.next_cursor}
    )


async def get_key(request: web.Request) -> web.Response:
    kid = key_id(request)
    key = await _keys(request).get(kid)
    if key is None:
        raise Problem(404, "key-not-found", f"no key {kid}")
    return web.json_response(key.to_public(now()))


async def rotate_key(request: web.Request) -> web.Response:
    kid, grace = key_id(request), body(request, KeyRotate).graceSeconds
    try:
        rotation = await _keys(request).rotate(kid, grace, _actor(request))
    except KeyRefused as exc:
        raise _problem(exc) from None
    # This gateway reads the old key's expiry at its next use; the others within
    # their key cache's lifetime (relayq.api.auth).
    request.app[KEYRING].forget(rotation.previous_digest)
    at = now()
    return web.json_response(
        {
            "secret": rotation.issued.secret,
            "key": rotation.issued.key.to_public(at),
            "previous": rotation.previous.to_public(at),
        },
        status=201,
    )


async def revoke_key(request: web.Request) -> web.Response:
    kid, reason = key_id(request), body(request, KeyRevoke).reason
    try:
        revocation = await _keys(request).revoke(kid, reason, _actor(request))
    except KeyRefused as exc:
        raise _problem(exc) from None
    request.app[KEYRING].forget(revocation.digest)
    return web.json_response({"key": revocation.key.to_public(now())})


async def audit(request: web.Request) -> web.Response:
    q = query(request, AuditQuery)
    page = await _keys(request).audit_entries(
        key_id=q.keyId, client=q.client, limit=q.limit, cursor=q.cursor
    )
    return web.json_response(
        {"entries": [e.to_public() for e in page.items], "nextCursor": page.next_cursor}
    )


# -- contract -------------------------------------------------------------------

Problems = list[int | tuple[int, list[str]]]
BODY_FAULTS: Problems = [(400, ["invalid-json"]), 413, 415]
KEY_PATH_FAULTS: Problems = [
    (400, ["invalid-json", "invalid-key-id"]),
    (404, ["key-not-found"]),
    413,
    415,
]
QUERY_FAULT = (400, ["invalid-query"])
OPERATIONS = [
    Operation(
        "POST", "/v1/admin/keys", create_key, "createApiKey", "Create a client API key", "admin",
        responses={201: Response("The key, and its secret: shown this once", IssuedKey)},
        problems=[*BODY_FAULTS, (422, ["invalid-body", "invalid-payload", "invalid-client-id"])],
        body=KeyCreate, body_problems={"client": "invalid-client-id"},
        description=(
            "The secret is returned in this answer only; relayq stores its SHA-256 hash. "
            "Audited (actor `admin`)."
        ),
    ),
    Operation(
        "GET", "/v1/admin/keys", list_keys, "listApiKeys",
        "List client API keys (never their secrets), newest first", "admin",
        responses={200: Response("One page of keys", KeyPage)}, problems=[QUERY_FAULT],
        query=KeyQuery,
        description=(
            "Keys created through this API or `relayq keys`; keys configured in the "
            "environment or written by hand without a key id are not listed."
        ),
    ),
    Operation(
        "GET", "/v1/admin/keys/{keyId}", get_key, "getApiKey", "One client API key", "admin",
        responses={200: Response("The key", ApiKey)},
        problems=[(400, ["invalid-key-id"]), (404, ["key-not-found"])], parameters=["KeyId"],
    ),
    Operation(
        "POST", "/v1/admin/keys/{keyId}/rotate", rotate_key, "rotateApiKey",
        "Replace a key: a new secret, the old one valid for a grace period", "admin",
        responses={201: Response("The new key with its secret (shown once), and the old",
                                 RotatedKey)},
        problems=[*KEY_PATH_FAULTS, (409, ["key-revoked", "key-expired", "key-rotated"]),
                  (422, ["invalid-body", "invalid-payload"])],
        body=KeyRotate, parameters=["KeyId"],
        description=(
            "The new key has the old one's client and label. The old key works until "
            f"`graceSeconds` from now (default {DEFAULT_GRACE_SECONDS}, at most "
            f"{MAX_GRACE_SECONDS}), then 401. A key is rotated once: a revoked, expired or "
            "already rotated key answers 409. Audited."
        ),
    ),
    Operation(
        "POST", "/v1/admin/keys/{keyId}/revoke", revoke_key, "revokeApiKey",
        "Revoke a key now", "admin",
        responses={200: Response("The revoked key", RevokedKey)},
        problems=[*KEY_PATH_FAULTS, (409, ["key-revoked"]),
                  (422, ["invalid-body", "invalid-payload"])],
        body=KeyRevoke, parameters=["KeyId"],
        description=(
            "The key answers 401 at once on this gateway, and on the others once their key "
            "cache forgets it (at most 30 s). Audited with the reason."
        ),
    ),
    Operation(
        "GET", "/v1/admin/audit", audit, "listAudit",
        "The audit trail of key changes, newest first", "admin",
        responses={200: Response("One page of entries", AuditPage)}, problems=[QUERY_FAULT],
        query=AuditQuery,
        description="Every create, rotate and revoke, by the gateway or the CLI, refusals too.",
    ),
]  # fmt: skip
