"""Client API keys as records, and the audit trail of every change to them.

A key is a document of MongoDB's `api_keys` collection, found by the hash of
its secret (`_id`, SHA-256 hex: what the gateway's KeyRing looks up) and named
by a public key id (`keyId`, `key_` + 28 hex digits that sort by creation).
The secret itself (`rq_` + 43 URL-safe characters, 256 random bits) is made
here, returned once and stored nowhere.

A key is active until it is revoked (`revokedAt`, `revokedReason`) or its
`expiresAt` passes. Rotation issues a new key for the same client and sets the
old one's `expiresAt` to the end of a grace period, so both work meanwhile; a
key is rotated once (its replacement is rotated next). Documents written by
hand before key ids existed (`{_id, client, disabled?}`) still authenticate
but have no key id: replace them with `relayq keys create` and delete them.

Every create, rotate and revoke, and every one refused (unknown key, already
revoked, rotated or expired), adds an entry to the `audit` collection: when,
who (`admin` through the gateway, `cli`), what, which key and client, why,
and where from (source address or host, request id). The API and the CLI both
act through `ApiKeys`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.write_concern import WriteConcern

from relayq.core.ids import new_task_id
from relayq.core.owners import is_client_id

SECRET_PREFIX = "rq_"
KEY_ID_PATTERN = re.compile(r"key_[0-9a-f]{28}")
AUDIT_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
LABEL_MAX_LENGTH = 200
REASON_MAX_LENGTH = 500
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 30 * 86_400
MAX_PAGE = 500
KEYS_COLLECTION = "api_keys"
AUDIT_COLLECTION = "audit"
WRITE_CONCERN = WriteConcern(w="majority", j=True)
# Labels and reasons end up in logs and terminals: no control characters.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Action = Literal["create", "rotate", "revoke"]
State = Literal["active", "expiring", "expired", "revoked"]


def hash_secret(secret: str) -> str:
    """How a key is stored and looked up: SHA-256 of the secret, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    """`key_`, 12 hex digits of milliseconds since the epoch, 64 random bits."""
    return f"key_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def is_key_id(value: str) -> bool:
    return KEY_ID_PATTERN.fullmatch(value) is not None


class KeyRefused(Exception):
    """A key change that cannot be made; `code` names why (a problem code of the API)."""

    code = "invalid-argument"
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)


class InvalidClientId(KeyRefused):
    code = "invalid-client-id"


class InvalidKeyArgument(KeyRefused):
    code = "invalid-payload"


class KeyNotFound(KeyRefused):
    code = "key-not-found"
    status = 404


class KeyRevoked(KeyRefused):
    code = "key-revoked"
    status = 409


class KeyExpired(KeyRefused):
    code = "key-expired"
    status = 409


class KeyRotated(KeyRefused):
    code = "key-rotated"
    status = 409


@dataclass(frozen=True)
class Actor:
    """Who acts, and where from: the gateway's admin (source address, request id) or the CLI."""

    name: str
    source: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class ApiKey:
    """A key's record, without its secret or hash."""

    key_id: str
    client: str
    label: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    rotated_from: str | None = None
    rotated_to: str | None = None

    def state(self, at: datetime) -> State:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expired" if self.expires_at <= at else "expiring"
        return "active"

    def to_public(self, at: datetime) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "client": self.client,
            "label": self.label,
            "state": self.state(at),
            "createdAt": self.created_at.isoformat(),
            "expiresAt": _iso(self.expires_at),
            "revokedAt": _iso(self.revoked_at),
            "revokedReason": self.revoked_reason,
            "rotatedFrom": self.rotated_from,
            "rotatedTo": self.rotated_to,
        }


@dataclass(frozen=True)
class Issued:
    """A new key and its secret: the only time the secret is known."""

    key: ApiKey
    secret: str
    digest: str


@dataclass(frozen=True)
class Rotation:
    issued: Issued
    previous: ApiKey
    previous_digest: str


@dataclass(frozen=True)
class Revocation:
    key: ApiKey
    digest: str


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: datetime
    actor: str
    action: Action
    outcome: Literal["ok", "refused"]
    key_id: str | None
    client: str | None
    reason: str | None
    source: str | None
    request_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "outcome": self.outcome,
            "keyId": self.key_id,
            "client": self.client,
            "reason": self.reason,
            "source": self.source,
            "requestId": self.request_id,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def key_is_valid(doc: Mapping[str, Any], at: datetime) -> bool:
    """Whether a stored key document authenticates at `at` (not disabled, revoked or expired)."""
    if doc.get("disabled", False) or doc.get("revokedAt") is not None:
        return False
    expires = doc.get("expiresAt")
    return expires is None or _aware(expires) > at


def now() -> datetime:
    """The time, to the millisecond MongoDB keeps: an answer shows what is stored."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class ApiKeys:
    """Creating, listing, rotating and revoking keys, each audited."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.keys: AsyncCollection[dict[str, Any]] = database.get_collection(
            KEYS_COLLECTION, write_concern=WRITE_CONCERN
        )
        self.audit: AsyncCollection[dict[str, Any]] = database.get_collection(
            AUDIT_COLLECTION, write_concern=WRITE_CONCERN
        )

    async def ensure_indexes(self) -> None:
        # `_id` (the hash) serves authentication; key ids, one client's keys and the
        # audit's filters have their own. Documents without a key id (written by hand)
        # are not in the listings: `keyId` ranges exclude a missing field.
        await self.keys.create_index([("keyId", DESCENDING)], name="key_id")
        await self.keys.create_index(
            [("client", ASCENDING), ("keyId", DESCENDING)], name="client_key_id"
        )
        await self.audit.create_index([("keyId", ASCENDING), ("_id", DESCENDING)], name="key_id")
        await self.audit.create_index(
            [("client", ASCENDING), ("_id", DESCENDING)], name="client_id"
        )

    # -- changes ------------------------------------------------------------

    async def create(self, client: str, label: str, actor: Actor) -> Issued:
        """A new key for `client`; its secret is in the answer and nowhere else."""
        try:
            _check_client(client)
            _check_text("label", label, LABEL_MAX_LENGTH)
        except KeyRefused as exc:
            await self._refused("create", actor, exc, client=client)
            raise
        issued = await self._issue(client, label, rotated_from=None)
        await self._record("create", actor, issued.key, details={"label": label})
        return issued

    async def rotate(self, key_id: str, grace_seconds: int, actor: Actor) -> Rotation:
        """A new key for the old one's client and label; the old one expires after the grace.

        Refused for an unknown, revoked, expired or already rotated key. The new key
        is written first: if the old one changed meanwhile (revoked, rotated by
        another call), the new one is deleted again and the rotation refused. A store
        failure between the two writes leaves a new key whose secret nobody was given
        (listed with `rotatedFrom`; revoke it) and the old key unchanged.
        """
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            exc = InvalidKeyArgument(f"graceSeconds: 0 to {MAX_GRACE_SECONDS}")
            await self._refused("rotate", actor, exc, key_id=key_id)
            raise exc
        doc = await self._usable(key_id, "rotate", actor)
        old = _key(doc)
        issued = await self._issue(old.client, old.label, rotated_from=old.key_id)
        at = now()
        expires_at = at + timedelta(seconds=grace_seconds)
        updated = await self.keys.find_one_and_update(
            {**_unchanged(doc), "_id": doc["_id"]},
            {"$set": {"expiresAt": expires_at, "rotatedTo": issued.key.key_id}},
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            await self.keys.delete_one({"_id": issued.digest})
            current = await self.keys.find_one({"keyId": key_id})
            refusal = _refusal(current, key_id, at) or KeyRotated(f"key {key_id} changed meanwhile")
            await self._refused("rotate", actor, refusal, key_id=key_id, client=old.client)
            raise refusal
        previous = _key(updated)
        await self._record(
            "rotate",
            actor,
            previous,
            details={"newKeyId": issued.key.key_id, "graceSeconds": grace_seconds,
                     "expiresAt": expires_at.isoformat()},
        )  # fmt: skip
        return Rotation(issued, previous, str(doc["_id"]))

    async def revoke(self, key_id: str, reason: str, actor: Actor) -> Revocation:
        """The key stops working now (in each gateway within its key cache's 30 s)."""
        try:
            _check_text("reason", reason, REASON_MAX_LENGTH)
        except KeyRefused as exc:
            await self._refused("revoke", actor, exc, key_id=key_id)
            raise
        doc = await self.keys.find_one_and_update(
            {"keyId": key_id, "revokedAt": None},
            {"$set": {"revokedAt": now(), "revokedReason": reason}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            current = await self.keys.find_one({"keyId": key_id})
            refusal: KeyRefused = (
                KeyNotFound(f"no key {key_id}")
                if current is None
                else KeyRevoked(f"key {key_id} is already revoked")
            )
            client = None if current is None else current.get("client")
            await self._refused(
                "revoke", actor, refusal, key_id=key_id, client=client, reason=reason
            )
            raise refusal
        key = _key(doc)
        await self._record("revoke", actor, key, reason=reason)
        return Revocation(key, str(doc["_id"]))

    # -- reads --------------------------------------------------------------

    async def get(self, key_id: str) -> ApiKey | None:
        doc = await self.keys.find_one({"keyId": key_id})
        return None if doc is None else _key(doc)

    async def list(
        self, *, client: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Keys newest first (by key id); `cursor` is the last key id of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {"keyId": {"$lt": cursor} if cursor else {"$gt": ""}}
        if client is not None:
            query["client"] = client
        docs = await self.keys.find(query).sort("keyId", DESCENDING).limit(limit + 1).to_list()
        keys = [_key(d) for d in docs[:limit]]
        return Page(keys, keys[-1].key_id if len(docs) > limit else None)

    async def audit_entries(
        self,
        *,
        key_id: str | None = None,
        client: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Audit entries newest first; `cursor` is the last id of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {}
        if key_id is not None:
            query["keyId"] = key_id
        if client is not None:
            query["client"] = client
        if cursor is not None:
            query["_id"] = {"$lt": cursor}
        docs = await self.audit.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        entries = [_entry(d) for d in docs[:limit]]
        return Page(entries, entries[-1].id if len(docs) > limit else None)

    # -- internals ----------------------------------------------------------

    async def _issue(self, client: str, label: str, rotated_from: str | None) -> Issued:
        secret = new_secret()
        key = ApiKey(new_key_id(), client, label, now(), rotated_from=rotated_from)
        doc: dict[str, Any] = {
            "_id": hash_secret(secret),
            "keyId": key.key_id,
            "client": client,
            "label": label,
            "createdAt": key.created_at,
            "expiresAt": None,
            "revokedAt": None,
            "revokedReason": None,
            "rotatedFrom": rotated_from,
            "rotatedTo": None,
        }
        await self.keys.insert_one(doc)
        return Issued(key, secret, doc["_id"])

    async def _usable(self, key_id: str, action: Action, actor: Actor) -> dict[str, Any]:
        """The key's document if it may be rotated, else the refusal (audited)."""
        doc = await self.keys.find_one({"keyId": key_id})
        exc = _refusal(doc, key_id, now())
        if exc is None and doc is not None and doc.get("rotatedTo"):
            exc = KeyRotated(f"key {key_id} was already rotated (to {doc['rotatedTo']})")
        if exc is not None:
            client = None if doc is None else doc.get("client")
            await self._refused(action, actor, exc, key_id=key_id, client=client)
            raise exc
        assert doc is not None
        return doc

    async def _record(
        self,
        action: Action,
        actor: Actor,
        key: ApiKey,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        await self._audit(action, "ok", actor, key.key_id, key.client, reason, details or {})

    async def _refused(
        self,
        action: Action,
        actor: Actor,
        exc: KeyRefused,
        *,
        key_id: str | None = None,
        client: str | None = None,
        reason: str | None = None,
    ) -> None:
        details = {"code": exc.code, "message": str(exc)}
        # What the caller gave is recorded only when valid: the audit holds no junk ids.
        key_id = key_id if key_id is not None and is_key_id(key_id) else None
        client = client if client is not None and is_client_id(client) else None
        if reason is not None and (CONTROL.search(reason) or len(reason) > REASON_MAX_LENGTH):
            reason = None
        await self._audit(action, "refused", actor, key_id, client, reason, details)

    async def _audit(
        self,
        action: Action,
        outcome: str,
        actor: Actor,
        key_id: str | None,
        client: str | None,
        reason: str | None,
        details: Mapping[str, Any],
    ) -> None:
        await self.audit.insert_one(
            {
                "_id": new_task_id(),
                "at": now(),
                "actor": actor.name,
                "action": action,
                "outcome": outcome,
                "keyId": key_id,
                "client": client,
                "reason": reason,
                "source": actor.source,
                "requestId": actor.request_id,
                "details": dict(details),
            }
        )


def _check_client(client: str) -> None:
    if not is_client_id(client):
        raise InvalidClientId(
            "client: letters, digits, '.', '_', '@', '-', starting with a letter or digit, "
            "at most 64"
        )


def _check_text(name: str, value: str, max_length: int) -> None:
    if not 1 <= len(value) <= max_length or CONTROL.search(value):
        raise InvalidKeyArgument(f"{name}: 1 to {max_length} characters, no control characters")


def _refusal(doc: Mapping[str, Any] | None, key_id: str, at: datetime) -> KeyRefused | None:
    if doc is None:
        return KeyNotFound(f"no key {key_id}")
    if doc.get("revokedAt") is not None:
        return KeyRevoked(f"key {key_id} is revoked")
    expires = doc.get("expiresAt")
    if expires is not None and _aware(expires) <= at:
        return KeyExpired(f"key {key_id} has expired")
    return None


def _unchanged(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A guard matching the document only as it was read (not revoked, rotated or expiring)."""
    return {"revokedAt": None, "rotatedTo": None, "expiresAt": doc.get("expiresAt")}


def _key(doc: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=str(doc["keyId"]),
        client=str(doc["client"]),
        label=str(doc.get("label", "")),
        created_at=_aware(doc["createdAt"]),
        expires_at=_optional(doc.get("expiresAt")),
        revoked_at=_optional(doc.get("revokedAt")),
        revoked_reason=doc.get("revokedReason"),
        rotated_from=doc.get("rotatedFrom"),
        rotated_to=doc.get("rotatedTo"),
    )


def _entry(doc: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=str(doc["_id"]),
        at=_aware(doc["at"]),
        actor=str(doc["actor"]),
        action=doc["action"],
        outcome=doc["outcome"],
        key_id=doc.get("keyId"),
        client=doc.get("client"),
        reason=doc.get("reason"),
        source=doc.get("source"),
        request_id=doc.get("requestId"),
        details=doc.get("details") or {},
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _optional(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
