"""Client API keys through the admin routes: create (secret once), list, rotate with a
grace period, revoke; each change and each refusal in the audit trail."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

import pytest

from relayq.api import auth
from relayq.core.api_keys import KEY_ID_PATTERN
from relayq.core.clients import Clients
from relayq.core.settings import Settings
from relayq.dev.servers import free_port
from tests.gateway import ADMIN, CLIENT, problem, sha256
from tests.integration.conftest import Api, MakeApi

KEY_FIELDS = {
    "keyId", "client", "label", "state", "createdAt", "expiresAt", "revokedAt",
    "revokedReason", "rotatedFrom", "rotatedTo",
}  # fmt: skip
UNKNOWN_KEY = "key_" + "0" * 28


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def create(api: Api, client: str = "client-k", label: str = "billing") -> dict[str, Any]:
    resp = await api.post("/v1/admin/keys", json={"client": client, "label": label}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def status_with(api: Api, secret: str) -> int:
    return (await api.get("/v1/tasks", headers=bearer(secret))).status


async def audit(api: Api, **params: str) -> list[dict[str, Any]]:
    resp = await api.get("/v1/admin/audit", params=params, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    entries: list[dict[str, Any]] = (await resp.json())["entries"]
    return entries


async def test_a_created_key_authenticates_as_its_client_and_is_stored_hashed(
    api: Api, clients: Clients
) -> None:
    resp = await api.post(
        "/v1/admin/keys", json={"client": "client-k", "label": "billing"},
        headers={**ADMIN, "X-Request-Id": "create-1"},
    )  # fmt: skip

    assert resp.status == 201, await resp.text()
    body = await resp.json()
    secret, key = body["secret"], body["key"]
    assert re.fullmatch(r"rq_[A-Za-z0-9_-]{43}", secret)
    assert set(key) == KEY_FIELDS
    assert KEY_ID_PATTERN.fullmatch(key["keyId"])
    assert (key["client"], key["label"], key["state"]) == ("client-k", "billing", "active")
    assert key["expiresAt"] is None and key["revokedAt"] is None
    submitted = await api.post("/v1/jobs", json={"type": "noop"}, headers=bearer(secret))
    assert submitted.status == 202, await submitted.text()
    task = await (await api.get(f"/v1/tasks/{(await submitted.json())['taskId']}",
                                headers=bearer(secret))).json()  # fmt: skip
    assert task["client"] == "client-k"
    stored = await clients.store.tasks.database["api_keys"].find_one({"keyId": key["keyId"]})
    assert stored is not None and stored["_id"] == sha256(secret)
    assert secret not in json.dumps(stored, default=str)
    [entry] = await audit(api, keyId=key["keyId"])
    assert entry["action"] == "create" and entry["outcome"] == "ok"
    assert (entry["actor"], entry["client"], entry["requestId"]) == (
        "admin",
        "client-k",
        "create-1",
    )
    assert entry["source"] == "127.0.0.1"
    assert secret not in json.dumps(entry)


async def test_listing_shows_every_key_but_never_a_secret_or_hash(
    api: Api, clients: Clients
) -> None:
    created = [await create(api, client=c) for c in ("client-k", "client-k", "client-j")]

    resp = await api.get("/v1/admin/keys", headers=ADMIN)
    assert resp.status == 200
    text = await resp.text()
    listed = (await resp.json())["keys"]
    assert [k["keyId"] for k in listed] == [c["key"]["keyId"] for c in reversed(created)]
    assert all(set(k) == KEY_FIELDS for k in listed)
    for c in created:
        assert c["secret"] not in text and sha256(c["secret"]) not in text

    one = await (await api.get("/v1/admin/keys?client=client-j", headers=ADMIN)).json()
    assert [k["keyId"] for k in one["keys"]] == [created[2]["key"]["keyId"]]
    first = await (await api.get("/v1/admin/keys?client=client-k&limit=1", headers=ADMIN)).json()
    assert [k["keyId"] for k in first["keys"]] == [created[1]["key"]["keyId"]]
    second = await (
        await api.get(
            f"/v1/admin/keys?client=client-k&limit=1&cursor={first['nextCursor']}", headers=ADMIN
        )
    ).json()
    assert [k["keyId"] for k in second["keys"]] == [created[0]["key"]["keyId"]]
    assert second["nextCursor"] is None
    got = await api.get(f"/v1/admin/keys/{created[0]['key']['keyId']}", headers=ADMIN)
    assert await got.json() == created[0]["key"]


async def test_a_hand_written_key_without_a_key_id_works_but_is_not_listed(
    api: Api, clients: Clients
) -> None:
    await clients.store.tasks.database["api_keys"].insert_one(
        {"_id": sha256("legacy-key"), "client": "client-l"}
    )

    assert await status_with(api, "legacy-key") == 200
    listed = await (await api.get("/v1/admin/keys", headers=ADMIN)).json()
    assert listed == {"keys": [], "nextCursor": None}


async def test_rotation_keeps_both_keys_working_for_the_grace_then_only_the_new(
    api: Api, clients: Clients
) -> None:
    old = await create(api)
    assert await status_with(api, old["secret"]) == 200  # remembered by the gateway now

    resp = await api.post(f"/v1/admin/keys/{old['key']['keyId']}/rotate",
                          json={"graceSeconds": 2}, headers=ADMIN)  # fmt: skip

    assert resp.status == 201, await resp.text()
    body = await resp.json()
    new, previous = body["key"], body["previous"]
    assert body["secret"] != old["secret"]
    assert (new["client"], new["label"], new["state"]) == ("client-k", "billing", "active")
    assert new["rotatedFrom"] == old["key"]["keyId"] and previous["rotatedTo"] == new["keyId"]
    assert previous["state"] == "expiring" and previous["expiresAt"] is not None
    assert await status_with(api, old["secret"]) == 200
    assert await status_with(api, body["secret"]) == 200
    await asyncio.sleep(2.2)
    await problem(await api.get("/v1/tasks", headers=bearer(old["secret"])), 401, "unauthorized")
    assert await status_with(api, body["secret"]) == 200
    listed = {k["keyId"]: k["state"] for k in
              (await (await api.get("/v1/admin/keys", headers=ADMIN)).json())["keys"]}  # fmt: skip
    assert listed == {old["key"]["keyId"]: "expired", new["keyId"]: "active"}
    [entry] = [e for e in await audit(api, keyId=old["key"]["keyId"]) if e["action"] == "rotate"]
    assert entry["outcome"] == "ok" and entry["actor"] == "admin"
    assert entry["details"]["newKeyId"] == new["keyId"] and entry["details"]["graceSeconds"] == 2


async def test_another_gateway_stops_accepting_a_rotated_key_at_its_expiry_not_later(
    api: Api, make_api: MakeApi, clients: Clients
) -> None:
    other = await make_api()
    old = await create(api)
    rotated = await api.post(f"/v1/admin/keys/{old['key']['keyId']}/rotate",
                             json={"graceSeconds": 2}, headers=ADMIN)  # fmt: skip
    assert rotated.status == 201

    assert await status_with(other, old["secret"]) == 200  # read, with its expiry, and cached
    await asyncio.sleep(2.2)

    # Well within the 30 s a known key is remembered: the cache honours the expiry.
    assert await status_with(other, old["secret"]) == 401


async def test_a_revoked_key_is_refused_at_once_here_and_within_the_cache_time_elsewhere(
    api: Api, make_api: MakeApi, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 1.0)
    other = await make_api()
    key = await create(api)
    assert await status_with(api, key["secret"]) == 200
    assert await status_with(other, key["secret"]) == 200

    resp = await api.post(f"/v1/admin/keys/{key['key']['keyId']}/revoke",
                          json={"reason": "leaked in a log"}, headers=ADMIN)  # fmt: skip

    assert resp.status == 200, await resp.text()
    revoked = (await resp.json())["key"]
    assert revoked["state"] == "revoked" and revoked["revokedReason"] == "leaked in a log"
    await problem(await api.get("/v1/tasks", headers=bearer(key["secret"])), 401, "unauthorized")
    await asyncio.sleep(1.1)
    assert await status_with(other, key["secret"]) == 401
    [entry] = [e for e in await audit(api, keyId=key["key"]["keyId"]) if e["action"] == "revoke"]
    assert (entry["outcome"], entry["reason"], entry["actor"]) == ("ok", "leaked in a log", "admin")


async def test_refusals_answer_their_codes_and_are_audited(api: Api, clients: Clients) -> None:
    key = await create(api)
    kid = key["key"]["keyId"]

    unknown = await api.post(f"/v1/admin/keys/{UNKNOWN_KEY}/rotate", json={}, headers=ADMIN)
    await problem(unknown, 404, "key-not-found")
    await problem(await api.post(f"/v1/admin/keys/{UNKNOWN_KEY}/revoke", json={"reason": "x"},
                                 headers=ADMIN), 404, "key-not-found")  # fmt: skip
    await problem(await api.get(f"/v1/admin/keys/{UNKNOWN_KEY}", headers=ADMIN), 404,
                  "key-not-found")  # fmt: skip
    first = await api.post(f"/v1/admin/keys/{kid}/rotate", json={"graceSeconds": 60},
                           headers=ADMIN)  # fmt: skip
    assert first.status == 201
    await problem(await api.post(f"/v1/admin/keys/{kid}/rotate", json={}, headers=ADMIN),
                  409, "key-rotated")  # fmt: skip
    assert await status_with(api, key["secret"]) == 200  # the refused rotation changed nothing
    revoked = await api.post(f"/v1/admin/keys/{kid}/revoke", json={"reason": "done"},
                             headers=ADMIN)  # fmt: skip
    assert revoked.status == 200
    await problem(await api.post(f"/v1/admin/keys/{kid}/revoke", json={"reason": "again"},
                                 headers=ADMIN), 409, "key-revoked")  # fmt: skip
    await problem(await api.post(f"/v1/admin/keys/{kid}/rotate", json={}, headers=ADMIN),
                  409, "key-revoked")  # fmt: skip

    entries = await audit(api)
    refused = [(e["action"], e["details"]["code"], e["keyId"]) for e in reversed(entries)
               if e["outcome"] == "refused"]  # fmt: skip
    assert refused == [
        ("rotate", "key-not-found", UNKNOWN_KEY),
        ("revoke", "key-not-found", UNKNOWN_KEY),
        ("rotate", "key-rotated", kid),
        ("revoke", "key-revoked", kid),
        ("rotate", "key-revoked", kid),
    ]
    keys = await (await api.get("/v1/admin/keys", headers=ADMIN)).json()
    assert len(keys["keys"]) == 2  # the refused rotation's new key was not kept


async def test_an_expired_key_cannot_be_rotated(api: Api, clients: Clients) -> None:
    key = await create(api)
    kid = key["key"]["keyId"]
    assert (await api.post(f"/v1/admin/keys/{kid}/rotate", json={"graceSeconds": 0},
                           headers=ADMIN)).status == 201  # fmt: skip
    await problem(await api.get("/v1/tasks", headers=bearer(key["secret"])), 401, "unauthorized")
    # Its replacement works; the expired key itself is refused further changes.
    await problem(await api.post(f"/v1/admin/keys/{kid}/rotate", json={}, headers=ADMIN),
                  409, "key-expired")  # fmt: skip


@pytest.mark.parametrize(
    ("path", "payload", "status", "code", "field"),
    [
        ("/v1/admin/keys", {"client": "a:b", "label": "x"}, 422, "invalid-client-id", "client"),
        ("/v1/admin/keys", {"client": "-x", "label": "x"}, 422, "invalid-client-id", "client"),
        ("/v1/admin/keys", {"client": 7, "label": "x"}, 422, "invalid-body", "client"),
        ("/v1/admin/keys", {"client": "c", "label": ""}, 422, "invalid-payload", "label"),
        ("/v1/admin/keys", {"client": "c", "label": "a\nb"}, 422, "invalid-payload", "label"),
        ("/v1/admin/keys", {"client": "c"}, 422, "invalid-body", "label"),
        ("/v1/admin/keys", {"client": "c", "label": "x", "secret": "mine"}, 422, "invalid-body",
         "secret"),
        (f"/v1/admin/keys/{UNKNOWN_KEY}/rotate", {"graceSeconds": -1}, 422, "invalid-payload",
         "graceSeconds"),
        (f"/v1/admin/keys/{UNKNOWN_KEY}/rotate", {"graceSeconds": 10**9}, 422, "invalid-payload",
         "graceSeconds"),
        (f"/v1/admin/keys/{UNKNOWN_KEY}/rotate", {"graceSeconds": "1"}, 422, "invalid-body",
         "graceSeconds"),
        (f"/v1/admin/keys/{UNKNOWN_KEY}/rotate", {"graceSeconds": True}, 422, "invalid-body",
         "graceSeconds"),
        (f"/v1/admin/keys/{UNKNOWN_KEY}/revoke", {}, 422, "invalid-body", "reason"),
        (f"/v1/admin/keys/{UNKNOWN_KEY}/revoke", {"reason": ""}, 422, "invalid-payload", "reason"),
        ("/v1/admin/keys/key_0/rotate", {}, 400, "invalid-key-id", None),
        ("/v1/admin/keys/KEY_" + "0" * 28 + "/revoke", {"reason": "x"}, 400, "invalid-key-id",
         None),
    ],
)  # fmt: skip
async def test_bad_input_is_refused_with_its_code(
    api: Api, path: str, payload: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    resp = await api.post(path, json=payload, headers=ADMIN)

    await problem(resp, status, code, field)
    assert await audit(api) == []  # refused before any key was looked at


@pytest.mark.parametrize(
    "path",
    ["/v1/admin/keys?client=a:b", "/v1/admin/keys?limit=0", "/v1/admin/keys?cursor=zz",
     "/v1/admin/audit?keyId=k", "/v1/admin/audit?limit=501", "/v1/admin/audit?cursor=x"],
)  # fmt: skip
async def test_a_bad_listing_query_is_invalid_query(api: Api, path: str) -> None:
    await problem(await api.get(path, headers=ADMIN), 400, "invalid-query")


async def test_key_routes_need_the_admin_token(api: Api) -> None:
    await problem(await api.get("/v1/admin/keys", headers=CLIENT), 403, "forbidden")
    await problem(await api.post("/v1/admin/keys", json={"client": "c", "label": "x"},
                                 headers=CLIENT), 403, "forbidden")  # fmt: skip
    await problem(await api.get("/v1/admin/audit"), 401, "unauthorized")


async def test_a_new_key_works_as_a_client_key_not_as_an_admin_token(api: Api) -> None:
    key = await create(api)

    await problem(await api.get("/v1/admin/keys", headers=bearer(key["secret"])), 403, "forbidden")


async def test_the_audit_pages_newest_first_and_filters_by_client(api: Api) -> None:
    keys = [await create(api, client=c) for c in ("client-a1", "client-a2", "client-a1")]

    page = await (await api.get("/v1/admin/audit?limit=2", headers=ADMIN)).json()
    assert [e["keyId"] for e in page["entries"]] == [k["key"]["keyId"] for k in keys[:0:-1]]
    rest = await (
        await api.get(f"/v1/admin/audit?limit=2&cursor={page['nextCursor']}", headers=ADMIN)
    ).json()
    assert [e["keyId"] for e in rest["entries"]] == [keys[0]["key"]["keyId"]]
    assert rest["nextCursor"] is None
    mine = await audit(api, client="client-a1")
    assert [e["keyId"] for e in mine] == [keys[2]["key"]["keyId"], keys[0]["key"]["keyId"]]


async def test_two_rotations_at_once_issue_one_new_key(api: Api, clients: Clients) -> None:
    key = await create(api)
    path = f"/v1/admin/keys/{key['key']['keyId']}/rotate"

    answers = await asyncio.gather(*[api.post(path, json={}, headers=ADMIN) for _ in range(4)])

    statuses = sorted(r.status for r in answers)
    assert statuses == [201, 409, 409, 409], statuses
    for resp in answers:
        if resp.status == 409:
            await problem(resp, 409, "key-rotated")
    listed = (await (await api.get("/v1/admin/keys", headers=ADMIN)).json())["keys"]
    assert len(listed) == 2  # the old key and one replacement, no orphan
    [winner] = [await r.json() for r in answers if r.status == 201]
    assert await status_with(api, winner["secret"]) == 200


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/v1/admin/keys", {"client": "c", "label": "x"}),
        ("GET", "/v1/admin/keys", None),
        ("POST", f"/v1/admin/keys/{UNKNOWN_KEY}/rotate", {}),
        ("POST", f"/v1/admin/keys/{UNKNOWN_KEY}/revoke", {"reason": "x"}),
        ("GET", "/v1/admin/audit", None),
    ],
)
async def test_mongo_down_key_routes_are_503_store_unavailable(
    make_api: MakeApi,
    settings: Settings,
    clients: Clients,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    down = replace(settings, mongo_url=f"mongodb://127.0.0.1:{free_port()}/")
    api = await make_api(settings=down, mongo_timeout_seconds=0.5)

    resp = await api.request(method, path, json=payload, headers=ADMIN)

    body = await problem(resp, 503, "store-unavailable")
    assert "Retry-After" in resp.headers, body
