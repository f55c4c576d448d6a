"""Property-based fuzzing of every route: each kind of fault gets its own specific answer.

For every operation the gateway serves (the relayer's included, on a local
chain), hypothesis sends bodies that are not JSON (deep nesting, lone
surrogates, NaN, bad UTF-8), JSON of the wrong shape full of random unicode and
huge numbers, odd headers, random path parameters and random query strings.
The answer must be a success or a problem+json 4xx whose code is the one that
fault calls for (never 5xx, and no catch-all: a body that is not JSON must be
`invalid-json`, a bad task id `invalid-task-id`, and so on).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayq.api.app import operations
from relayq.api.contract import Operation
from tests.e2e.test_api_schema import ServedApp, served  # noqa: F401  (the fixture)
from tests.gateway import ADMIN, CLIENT

EXAMPLES = 25
OPERATIONS = operations(["relayq.relayer.jobs"])
BODY_OPS = [op for op in OPERATIONS if op.body is not None]
QUERY_OPS = [op for op in OPERATIONS if op.query is not None]
PATH_OPS = [op for op in OPERATIONS if "{" in op.path]
PROBLEM = "application/problem+json"
TASK_ID = "0" * 32
KEY_ID = "key_" + "0" * 28
# A body each operation accepts as far as its shape goes, for faults elsewhere.
VALID_BODY = {
    "/v1/jobs": {"type": "noop"},
    "/v1/buy-tokens": {"wallet": "11111111111111111111111111111111", "solAmount": 0.01,
                       "bundleId": "starter"},
}  # fmt: skip
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
huge = st.sampled_from([10**30, -(10**40), 1e308, -1e308, 2**63, 1e-320])
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | huge | text
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
not_json = st.sampled_from(
    [
        b"[" * 3000 + b"]" * 3000,  # nesting past the parser's limit
        b'{"type": "\\ud800"}',  # a lone surrogate
        b'{"type": NaN}',
        b'{"type": Infinity}',
        b"\xff\xfe\x00{",
        b'{"type": "noop",}',
        b"",
    ]
)


def auth(op: Operation) -> dict[str, str]:
    return ADMIN if op.tag == "admin" else CLIENT if op.tag == "client" else {}


def url(app: ServedApp, op: Operation) -> str:
    path = op.path.replace("{taskId}", TASK_ID).replace("{priority}", "high")
    path = path.replace("{keyId}", KEY_ID)
    return app.url + path


def codes_of(op: Operation) -> set[str]:
    out = set()
    for item in op.problems:
        if isinstance(item, tuple):
            out.update(item[1])
    return out


def check(
    resp: requests.Response, allowed: set[str], *, success: bool = True, op: Operation
) -> None:
    where = f"{op.method} {op.path}"
    assert resp.status_code < 500, (where, resp.status_code, resp.text[:300])
    if resp.status_code < 400:
        assert success, (where, "a fault was accepted", resp.status_code, resp.text[:300])
        return
    assert resp.headers["Content-Type"].startswith(PROBLEM), (where, resp.headers)
    code = resp.json()["code"]
    assert code in allowed, (where, resp.status_code, code, sorted(allowed), resp.text[:300])


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: f"{op.method} {op.path}")
def test_a_body_that_is_not_json_is_invalid_json(served: ServedApp, op: Operation) -> None:  # noqa: F811
    session = requests.Session()

    @SETTINGS
    @given(raw=not_json)
    def send(raw: bytes) -> None:
        headers = {**auth(op), "Content-Type": "application/json", "Idempotency-Key": "fuzz-1"}
        resp = session.request(op.method, url(served, op), data=raw, headers=headers, timeout=30)
        check(resp, {"invalid-json"}, success=False, op=op)

    send()


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: f"{op.method} {op.path}")
def test_a_body_of_the_wrong_shape_is_refused_by_its_field(
    served: ServedApp,  # noqa: F811
    op: Operation,
) -> None:
    session = requests.Session()
    refusals = codes_of(op) | {"invalid-body", "invalid-payload", "task-not-found"}

    @SETTINGS
    @given(body=st.dictionaries(text, json_values, max_size=6) | json_values)
    def send(body: Any) -> None:
        headers = {**auth(op), "Content-Type": "application/json", "Idempotency-Key": "fuzz-2"}
        resp = session.request(
            op.method, url(served, op), data=json.dumps(body), headers=headers, timeout=30
        )
        check(resp, refusals, op=op)
        if resp.status_code == 422 and not isinstance(body, dict):
            assert resp.json()["code"] == "invalid-body"

    send()


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: f"{op.method} {op.path}")
def test_a_body_that_is_not_declared_json_is_415(served: ServedApp, op: Operation) -> None:  # noqa: F811
    session = requests.Session()

    @SETTINGS
    @given(content_type=st.sampled_from(["text/plain", "application/xml", "multipart/form-data",
                                         "application/jsonx", "json"]))  # fmt: skip
    def send(content_type: str) -> None:
        body = json.dumps(VALID_BODY.get(op.path, {"reason": "x"}))
        headers = {**auth(op), "Content-Type": content_type, "Idempotency-Key": "fuzz-3"}
        resp = session.request(op.method, url(served, op), data=body, headers=headers, timeout=30)
        check(resp, {"unsupported-media-type"}, success=False, op=op)

    send()


IDEMPOTENT_OPS = [op for op in BODY_OPS if "IdempotencyKey" in op.parameters]


@pytest.mark.parametrize("op", IDEMPOTENT_OPS, ids=lambda op: f"{op.method} {op.path}")
def test_an_idempotency_key_outside_printable_ascii_is_refused_by_name(
    served: ServedApp,  # noqa: F811
    op: Operation,
) -> None:
    session = requests.Session()
    # Bytes HTTP allows in a field value (RFC 9110: VCHAR, SP, HTAB, obs-text), but
    # not all printable ASCII, or too many. Other bytes are not HTTP: the server's
    # parser answers 400 before any route (test_a_header_that_is_not_http_is_400).
    field_byte = st.sampled_from([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
    odd = st.lists(field_byte, min_size=1, max_size=300).map(bytes).filter(
        lambda b: (any(c == 0x09 or c > 0x7E for c in b) or len(b) > 255)
        and b.strip(b" \t") == b
    )  # fmt: skip

    @SETTINGS
    @given(key=odd)
    def send(key: bytes) -> None:
        headers: dict[str, Any] = {**auth(op), "Content-Type": "application/json",
                                   "Idempotency-Key": key}  # fmt: skip
        resp = session.request(
            op.method, url(served, op), data=json.dumps(VALID_BODY[op.path]), headers=headers,
            timeout=30,
        )  # fmt: skip
        check(resp, {"invalid-payload"}, success=False, op=op)
        assert resp.json().get("field") == "Idempotency-Key"

    send()


@pytest.mark.parametrize("op", PATH_OPS, ids=lambda op: f"{op.method} {op.path}")
def test_a_random_path_parameter_is_refused_as_such(served: ServedApp, op: Operation) -> None:  # noqa: F811
    session = requests.Session()
    name = next(n for n in ("taskId", "keyId", "priority") if "{" + n + "}" in op.path)
    expected = {
        "taskId": {"invalid-task-id", "not-found", "task-not-found", "not-a-dead-letter"},
        "keyId": {"invalid-key-id", "not-found", "key-not-found"},
        "priority": {"invalid-priority", "not-found"},
    }[name]
    # A dot segment is resolved before routing: POST /v1/admin/keys/./rotate is
    # POST /v1/admin/keys/rotate, which names GET /v1/admin/keys/{keyId}: 405.
    expected |= {"method-not-allowed"}
    body = json.dumps({"reason": "fuzz"})

    @SETTINGS
    @given(value=st.text(min_size=1, max_size=80))
    def send(value: str) -> None:
        encoded = quote(value.encode("utf-8", "surrogatepass"), safe="")
        path = op.path.replace("{" + name + "}", encoded).replace("{taskId}", TASK_ID)
        headers = {**auth(op), "Content-Type": "application/json"}
        resp = session.request(op.method, served.url + path, data=body, headers=headers, timeout=30)
        # A value that happens to be valid meets a task or key that does not exist, or succeeds.
        check(resp, expected, op=op)

    send()


@pytest.mark.parametrize("op", QUERY_OPS, ids=lambda op: f"{op.method} {op.path}")
def test_a_random_query_string_is_invalid_query_or_served(served: ServedApp, op: Operation) -> None:  # noqa: F811
    session = requests.Session()
    assert op.query is not None
    names = list(op.query.model_fields)

    @SETTINGS
    @given(params=st.dictionaries(st.sampled_from(names), st.text(max_size=60), min_size=1))
    def send(params: dict[str, str]) -> None:
        query = "&".join(f"{k}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
                         for k, v in params.items())  # fmt: skip
        resp = session.request(
            op.method, f"{url(served, op)}?{query}", headers=auth(op), timeout=30
        )
        check(resp, {"invalid-query"}, op=op)

    send()


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.tag != "operations"],
                         ids=lambda op: f"{op.method} {op.path}")  # fmt: skip
def test_random_credentials_are_unauthorized(served: ServedApp, op: Operation) -> None:  # noqa: F811
    session = requests.Session()
    printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                        max_size=300)  # fmt: skip

    @SETTINGS
    @given(scheme=st.sampled_from(["Bearer", "Basic", "bearer", ""]), token=printable)
    def send(scheme: str, token: str) -> None:
        headers = {"Authorization": f"{scheme} {token}".strip(), "Content-Type": "application/json"}
        resp = session.request(op.method, url(served, op), data="{}", headers=headers, timeout=30)
        check(resp, {"unauthorized"}, success=False, op=op)

    send()


@pytest.mark.parametrize("byte", [0x00, 0x01, 0x1F, 0x7F])
def test_a_header_that_is_not_http_is_400_not_a_5xx(served: ServedApp, byte: int) -> None:  # noqa: F811
    headers: dict[str, Any] = {**CLIENT, "Content-Type": "application/json",
                               "Idempotency-Key": b"k" + bytes([byte]) + b"k"}  # fmt: skip
    try:
        resp = requests.post(served.url + "/v1/jobs", data="{}", headers=headers, timeout=30)
    except requests.exceptions.InvalidHeader:
        return  # the client library refused to send it: nothing reached the server
    assert resp.status_code == 400, resp.text
