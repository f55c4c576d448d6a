"""POST /v1/jobs refuses bad input with a precise problem, and records nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relayq.core.clients import Clients
from relayq.core.service import MAX_DELAY_SECONDS
from tests.gateway import CLIENT, dispatched, problem
from tests.integration.conftest import Api

JSON = {**CLIENT, "Content-Type": "application/json"}
SOON = (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def assert_nothing_recorded(clients: Clients) -> None:
    assert (await clients.store.list()).tasks == []
    assert set((await dispatched(clients)).values()) == {0}


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b'{"type": "noop",}',
        b'{"type": NaN}',
        b"\xff\xfe",
        b'{"type": "noop", "payload": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"type": "noop", "payload": {"name": "\\ud800"}}',
    ],
    ids=["garbage", "empty", "trailing-comma", "nan", "not-utf8", "nested-5000", "surrogate"],
)
async def test_body_that_is_not_json_is_400_invalid_json(
    api: Api, clients: Clients, raw: bytes
) -> None:
    resp = await api.post("/v1/jobs", data=raw, headers=JSON)

    await problem(resp, 400, "invalid-json")
    await assert_nothing_recorded(clients)


@pytest.mark.parametrize("body", [[{"type": "noop"}], "noop", 5, None], ids=repr)
async def test_body_that_is_not_an_object_is_422_invalid_body(
    api: Api, clients: Clients, body: Any
) -> None:
    resp = await api.post("/v1/jobs", data=json.dumps(body), headers=JSON)

    await problem(resp, 422, "invalid-body")
    await assert_nothing_recorded(clients)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "type"),
        ({"type": "noop", "colour": "red"}, "colour"),
        ({"type": 5}, "type"),
        ({"type": "noop", "payload": [1]}, "payload"),
        ({"type": "noop", "payload": "x"}, "payload"),
        ({"type": "noop", "priority": 3}, "priority"),
        ({"type": "noop", "delaySeconds": "10"}, "delaySeconds"),
        ({"type": "noop", "delaySeconds": True}, "delaySeconds"),
        ({"type": "noop", "maxAttempts": 1.5}, "maxAttempts"),
        ({"type": "noop", "maxAttempts": "3"}, "maxAttempts"),
        ({"type": "noop", "maxAttempts": True}, "maxAttempts"),
        ({"type": "noop", "runAt": 1_700_000_000}, "runAt"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
async def test_missing_unknown_or_mistyped_field_is_422_invalid_body_naming_it(
    api: Api, clients: Clients, body: dict[str, Any], field: str
) -> None:
    resp = await api.post("/v1/jobs", json=body, headers=CLIENT)

    await problem(resp, 422, "invalid-body", field=field)
    await assert_nothing_recorded(clients)


async def test_unregistered_type_is_422_unknown_job_type(api: Api, clients: Clients) -> None:
    resp = await api.post("/v1/jobs", json={"type": "no-such-type"}, headers=CLIENT)

    body = await problem(resp, 422, "unknown-job-type", field="type")
    assert "no-such-type" in body["detail"]
    await assert_nothing_recorded(clients)


@pytest.mark.parametrize("priority", ["urgent", "", "critical!"])
async def test_unknown_priority_is_422_invalid_priority(
    api: Api, clients: Clients, priority: str
) -> None:
    resp = await api.post("/v1/jobs", json={"type": "noop", "priority": priority}, headers=CLIENT)

    body = await problem(resp, 422, "invalid-priority", field="priority")
    assert "critical" in body["detail"]  # names the choices
    await assert_nothing_recorded(clients)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "noop", "maxAttempts": 0}, "maxAttempts"),
        ({"type": "noop", "maxAttempts": 101}, "maxAttempts"),
        ({"type": "noop", "delaySeconds": -1}, "delaySeconds"),
        ({"type": "noop", "delaySeconds": MAX_DELAY_SECONDS + 1}, "delaySeconds"),
        (
            {"type": "noop", "runAt": (datetime.now(UTC) + timedelta(days=400)).isoformat()},
            "runAt",
        ),
        ({"type": "sleep", "payload": {"seconds": -1}}, "payload.seconds"),
        ({"type": "sleep", "payload": {"seconds": "long"}}, "payload.seconds"),
        ({"type": "fail", "payload": {"times": -2}}, "payload.times"),
    ],
    ids=[
        "maxAttempts-0",
        "maxAttempts-101",
        "negative-delay",
        "delay-beyond-30-days",
        "runAt-beyond-30-days",
        "sleep-negative",
        "sleep-string",
        "fail-negative-times",
    ],
)
async def test_out_of_range_value_is_422_invalid_payload_naming_the_field(
    api: Api, clients: Clients, body: dict[str, Any], field: str
) -> None:
    resp = await api.post("/v1/jobs", json=body, headers=CLIENT)

    await problem(resp, 422, "invalid-payload", field=field)
    await assert_nothing_recorded(clients)


@pytest.mark.parametrize("run_at", ["2030-01-01T00:00:00", "tomorrow", "2030-01-01"])
async def test_run_at_without_offset_or_not_a_date_time_is_422(
    api: Api, clients: Clients, run_at: str
) -> None:
    resp = await api.post("/v1/jobs", json={"type": "noop", "runAt": run_at}, headers=CLIENT)

    assert resp.status == 422
    body = await resp.json(content_type=None)
    assert body["code"] in {"invalid-body", "invalid-payload"}
    assert body["field"] == "runAt"
    await assert_nothing_recorded(clients)


async def test_run_at_together_with_delay_seconds_is_422(api: Api, clients: Clients) -> None:
    resp = await api.post(
        "/v1/jobs", json={"type": "noop", "runAt": SOON, "delaySeconds": 5}, headers=CLIENT
    )

    assert resp.status == 422
    body = await resp.json(content_type=None)
    assert body["code"] in {"invalid-body", "invalid-payload"}
    assert body["field"] in {"runAt", "delaySeconds"}
    await assert_nothing_recorded(clients)


async def test_body_over_512_kib_is_413_payload_too_large(api: Api, clients: Clients) -> None:
    big = json.dumps({"type": "noop", "payload": {"blob": "x" * (512 * 1024)}})

    resp = await api.post("/v1/jobs", data=big, headers=JSON)

    await problem(resp, 413, "payload-too-large")
    await assert_nothing_recorded(clients)


async def test_body_just_under_512_kib_is_read(api: Api, clients: Clients) -> None:
    # Under the HTTP limit but over the payload limit (256 KiB): refused by the job rules.
    body = json.dumps({"type": "noop", "payload": {"blob": "x" * (400 * 1024)}})

    resp = await api.post("/v1/jobs", data=body, headers=JSON)

    await problem(resp, 422, "invalid-payload", field="payload")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None], ids=str
)
async def test_body_that_is_not_application_json_is_415(
    api: Api, clients: Clients, content_type: str | None
) -> None:
    headers = dict(CLIENT)
    if content_type is not None:
        headers["Content-Type"] = content_type

    resp = await api.post("/v1/jobs", data=b'{"type": "noop"}', headers=headers)

    await problem(resp, 415, "unsupported-media-type")
    await assert_nothing_recorded(clients)


async def test_json_with_charset_parameter_is_accepted(api: Api) -> None:
    resp = await api.post(
        "/v1/jobs",
        data=b'{"type": "noop"}',
        headers={**CLIENT, "Content-Type": "application/json; charset=utf-8"},
    )

    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize(
    "run_at",
    [
        "2030-01-01T00:00:00Z",
        "2030-01-01T02:00:00+02:00",
        "2029-12-31T18:30:00.250-05:30",
        "2030-01-01t00:00:00z",  # RFC 3339 allows lower-case T and Z
    ],
)
async def test_run_at_in_rfc3339_forms_is_accepted(api: Api, clients: Clients, run_at: str) -> None:
    # Past instants are fine too (the job is due at once); only more than 30 days ahead is not.
    past = run_at.replace("2030", "2020").replace("2029", "2019")

    resp = await api.post("/v1/jobs", json={"type": "noop", "runAt": past}, headers=CLIENT)

    assert resp.status == 202, await resp.text()
    task = await clients.store.get((await resp.json())["taskId"])
    assert task is not None and task.run_at is not None
    assert task.run_at.year in (2019, 2020)


@pytest.mark.parametrize("run_at", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59+01:00"])
async def test_run_at_before_the_representable_range_is_422_not_500(
    api: Api, clients: Clients, run_at: str
) -> None:
    resp = await api.post("/v1/jobs", json={"type": "noop", "runAt": run_at}, headers=CLIENT)

    assert resp.status == 422, await resp.text()
    assert (await resp.json(content_type=None))["field"] == "runAt"
    await assert_nothing_recorded(clients)
