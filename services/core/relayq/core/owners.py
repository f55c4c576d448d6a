"""Whose a task is: client ids, idempotency keys, and how one scopes the other.

A task submitted through the gateway belongs to the client whose key was
presented (`Task.owner`); only that client and administrators can read it.
Tasks relayq or an operator creates have no owner. A client's idempotency keys
are stored as `<client>:<key>`: client ids cannot contain `:`, so the pair is
unambiguous (two clients can never collide on one stored key).
"""

from __future__ import annotations

import re

CLIENT_ID_MAX_LENGTH = 64
IDEMPOTENCY_KEY_MAX_LENGTH = 255
CLIENT_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@-]{{0,{CLIENT_ID_MAX_LENGTH - 1}}}")
# Printable ASCII, space included (RFC 9110 field values allow it inside).
IDEMPOTENCY_KEY = re.compile(rf"[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")
# The scope of keys no client gave (relayq's own follow-up tasks, the CLI): not a
# client id, so it cannot collide with one. Such keys were stored bare before
# scoping; `legacy_key` names that form, which submissions still honour.
NO_CLIENT = "~"


def is_client_id(value: str) -> bool:
    """Letters, digits, `.`, `_`, `@`, `-`; starts with a letter or digit; at most 64."""
    return CLIENT_ID.fullmatch(value) is not None


def is_idempotency_key(value: str) -> bool:
    """1 to 255 printable ASCII characters."""
    return IDEMPOTENCY_KEY.fullmatch(value) is not None


def scoped_key(client: str | None, key: str) -> str:
    """The stored form of a client's idempotency key (unique across clients)."""
    return f"{client or NO_CLIENT}:{key}"


def legacy_key(client: str | None, key: str) -> str | None:
    """The form a key without a client had before scoping (the bare key), else None."""
    return key if client is None else None


def owner_of_scoped_key(stored: str) -> str | None:
    """The client a stored idempotency key belongs to (None for keys without one)."""
    client, sep, _ = stored.partition(":")
    if not sep or client == NO_CLIENT or not is_client_id(client):
        return None
    return client
