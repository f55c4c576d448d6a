from __future__ import annotations

import math
import random
import re
import time
from dataclasses import astuple
from typing import Any

import pytest

from relayq.core.diagnostics import DIAGNOSTIC_TYPES, MAX_SLEEP_SECONDS
from relayq.core.ids import is_task_id, new_task_id
from relayq.core.jobs import (
    JOB_TYPE_MAX_LENGTH,
    MAX_PAYLOAD_BYTES,
    InvalidPayload,
    JobContext,
    JobType,
    RateLimit,
    Registry,
    UnknownJobType,
)
from relayq.core.keys import Keys
from relayq.core.modules import load_registry
from relayq.core.priorities import Priority, PriorityClass


async def _handler(payload: dict[str, Any], ctx: JobContext) -> None:
    return None


def _job(name: str, **kwargs: Any) -> JobType:
    return JobType(name, _handler, **kwargs)


def _diagnostics() -> Registry:
    return Registry(DIAGNOSTIC_TYPES)


# -- Priority ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("critical", Priority.CRITICAL),
        ("HIGH", Priority.HIGH),
        ("Medium", Priority.MEDIUM),
        ("  low ", Priority.LOW),
        ("bAtCh", Priority.BATCH),
    ],
)
def test_priority_parse_ignores_case_and_surrounding_space(text: str, expected: Priority) -> None:
    assert Priority.parse(text) is expected


@pytest.mark.parametrize("text", ["urgent", "", "crit", "critical!"])
def test_priority_parse_unknown_raises_value_error_listing_every_choice(text: str) -> None:
    with pytest.raises(ValueError, match="unknown priority") as info:
        Priority.parse(text)
    message = str(info.value)
    assert repr(text) in message
    for p in Priority:
        assert p.value in message


# -- Registry ----------------------------------------------------------------


def test_registry_rejects_a_name_registered_twice() -> None:
    registry = Registry([_job("a")])
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(_job("a"))


def test_registry_constructor_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        Registry([_job("a"), _job("b"), _job("a")])


@pytest.mark.parametrize("name", ["", "x" * (JOB_TYPE_MAX_LENGTH + 1)])
def test_registry_rejects_empty_or_overlong_names(name: str) -> None:
    with pytest.raises(ValueError, match="bad job type name"):
        Registry().add(_job(name))


def test_registry_accepts_a_name_of_maximum_length() -> None:
    name = "x" * JOB_TYPE_MAX_LENGTH
    registry = Registry([_job(name)])
    assert name in registry
    assert registry.get(name).name == name


def test_registry_unknown_type_raises_unknown_job_type_with_code() -> None:
    registry = Registry([_job("a")])
    with pytest.raises(UnknownJobType, match="'nope'") as info:
        registry.get("nope")
    assert info.value.code == "unknown-job-type"


def test_registry_lists_names_sorted_and_supports_membership() -> None:
    registry = Registry([_job("zeta"), _job("alpha"), _job("mid")])
    assert registry.names() == ["alpha", "mid", "zeta"]
    assert [t.name for t in registry.all()] == ["alpha", "mid", "zeta"]
    assert "mid" in registry
    assert "other" not in registry


def test_load_registry_holds_diagnostics_plus_module_job_types() -> None:
    registry = load_registry(["tests.jobtypes"])
    for name in ("noop", "sleep", "fail", "record", "limited", "crash"):
        assert name in registry


# -- check_payload -----------------------------------------------------------


def test_check_payload_unknown_type_raises_before_looking_at_the_payload() -> None:
    with pytest.raises(UnknownJobType):
        _diagnostics().check_payload("nope", "not even an object")


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None, True])
def test_check_payload_rejects_non_objects(payload: object) -> None:
    with pytest.raises(InvalidPayload, match="JSON object") as info:
        _diagnostics().check_payload("noop", payload)
    assert info.value.field == "payload"
    assert info.value.code == "invalid-payload"


@pytest.mark.parametrize(
    "payload",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": -math.inf},
        {"x": {1, 2}},
        {"nested": {"when": object()}},
        {"x": b"bytes"},
    ],
)
def test_check_payload_rejects_values_json_cannot_carry(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="not JSON") as info:
        _diagnostics().check_payload("noop", payload)
    assert info.value.field == "payload"


def test_check_payload_rejects_payload_over_the_byte_limit() -> None:
    # '{"x":"' + body + '"}' is 8 bytes of framing.
    too_big = {"x": "a" * (MAX_PAYLOAD_BYTES - 8 + 1)}
    with pytest.raises(InvalidPayload, match=str(MAX_PAYLOAD_BYTES)) as info:
        _diagnostics().check_payload("noop", too_big)
    assert info.value.field == "payload"


def test_check_payload_accepts_payload_exactly_at_the_byte_limit() -> None:
    at_limit = {"x": "a" * (MAX_PAYLOAD_BYTES - 8)}
    assert _diagnostics().check_payload("noop", at_limit) == at_limit


def test_check_payload_returns_a_copy_not_the_callers_mapping() -> None:
    payload = {"a": 1}
    checked = _diagnostics().check_payload("noop", payload)
    assert checked == payload
    checked["b"] = 2
    assert payload == {"a": 1}


def test_check_payload_runs_the_type_validator_and_returns_its_result() -> None:
    def validate(p: dict[str, Any]) -> dict[str, Any]:
        if "n" not in p:
            raise InvalidPayload("n is required", field="payload.n")
        return {**p, "n": int(p["n"])}

    registry = Registry([_job("v", validate=validate)])
    assert registry.check_payload("v", {"n": "3"}) == {"n": 3}
    with pytest.raises(InvalidPayload) as info:
        registry.check_payload("v", {})
    assert info.value.field == "payload.n"


# -- backoff -----------------------------------------------------------------


def _cls(base: float = 2.0, cap: float = 300.0) -> PriorityClass:
    return PriorityClass(Priority.HIGH, 5.0, 1, 10, base, cap)


def test_backoff_grows_exponentially_within_equal_jitter_bounds() -> None:
    job = _job("j")
    rng = random.Random(1234)
    for attempt in range(1, 8):
        full = 2.0 * 2 ** (attempt - 1)
        for _ in range(200):
            delay = job.backoff_seconds(_cls(), attempt, rng)
            assert full / 2 <= delay <= full


def test_backoff_jitter_actually_spreads_over_the_upper_half() -> None:
    job = _job("j")
    rng = random.Random(99)
    delays = [job.backoff_seconds(_cls(), 3, rng) for _ in range(500)]  # full delay 8 s
    assert min(delays) < 4.5
    assert max(delays) > 7.5


def test_backoff_is_capped_at_the_class_maximum() -> None:
    job = _job("j")
    rng = random.Random(7)
    for attempt in (10, 20, 60):
        for _ in range(100):
            delay = job.backoff_seconds(_cls(cap=30.0), attempt, rng)
            assert 15.0 <= delay <= 30.0


def test_backoff_uses_the_job_types_base_over_the_class_base() -> None:
    job = _job("j", backoff_base_seconds=0.5)
    rng = random.Random(3)
    for _ in range(100):
        assert 0.5 <= job.backoff_seconds(_cls(base=10.0), 2, rng) <= 1.0


def test_backoff_attempt_zero_is_treated_as_first_retry() -> None:
    job = _job("j")
    rng = random.Random(5)
    for _ in range(50):
        assert 1.0 <= job.backoff_seconds(_cls(), 0, rng) <= 2.0


def test_attempts_under_prefers_the_job_types_override() -> None:
    assert _job("j").attempts_under(_cls()) == 10
    assert _job("j", max_attempts=2).attempts_under(_cls()) == 2


@pytest.mark.parametrize(("limit", "period"), [(0, 1.0), (1, 0.0), (5, -1.0)])
def test_rate_limit_rejects_non_positive_values(limit: int, period: float) -> None:
    with pytest.raises(ValueError):
        RateLimit(limit, period)


# -- diagnostics validators --------------------------------------------------


def test_sleep_defaults_to_one_second_as_float() -> None:
    assert _diagnostics().check_payload("sleep", {}) == {"seconds": 1.0}


@pytest.mark.parametrize("seconds", [0, 0.5, 3, MAX_SLEEP_SECONDS])
def test_sleep_accepts_seconds_within_bounds_normalised_to_float(seconds: float) -> None:
    checked = _diagnostics().check_payload("sleep", {"seconds": seconds})
    assert checked["seconds"] == float(seconds)
    assert isinstance(checked["seconds"], float)


@pytest.mark.parametrize("seconds", [-0.001, MAX_SLEEP_SECONDS + 1, -5])
def test_sleep_rejects_seconds_out_of_bounds(seconds: float) -> None:
    with pytest.raises(InvalidPayload, match="between") as info:
        _diagnostics().check_payload("sleep", {"seconds": seconds})
    assert info.value.field == "payload.seconds"


@pytest.mark.parametrize("seconds", ["1", True, None, [1], {"s": 1}])
def test_sleep_rejects_non_number_seconds(seconds: object) -> None:
    with pytest.raises(InvalidPayload, match="number") as info:
        _diagnostics().check_payload("sleep", {"seconds": seconds})
    assert info.value.field == "payload.seconds"


@pytest.mark.parametrize(
    "payload",
    [{}, {"times": 0}, {"times": 3}, {"permanent": True}, {"message": "boom"}],
)
def test_fail_accepts_well_typed_options(payload: dict[str, Any]) -> None:
    assert _diagnostics().check_payload("fail", payload) == payload


@pytest.mark.parametrize("times", [-1, 1.5, "2", True, False])
def test_fail_rejects_times_that_is_not_a_non_negative_integer(times: object) -> None:
    with pytest.raises(InvalidPayload) as info:
        _diagnostics().check_payload("fail", {"times": times})
    assert info.value.field == "payload.times"


@pytest.mark.parametrize("permanent", ["yes", 1, None])
def test_fail_rejects_non_boolean_permanent(permanent: object) -> None:
    with pytest.raises(InvalidPayload) as info:
        _diagnostics().check_payload("fail", {"permanent": permanent})
    assert info.value.field == "payload.permanent"


@pytest.mark.parametrize("message", [1, None, ["m"]])
def test_fail_rejects_non_string_message(message: object) -> None:
    with pytest.raises(InvalidPayload) as info:
        _diagnostics().check_payload("fail", {"message": message})
    assert info.value.field == "payload.message"


# -- ids ---------------------------------------------------------------------


def test_new_task_id_is_32_lowercase_hex_with_current_millis_prefix() -> None:
    before = time.time_ns() // 1_000_000
    task_id = new_task_id()
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)
    assert before <= int(task_id[:12], 16) <= after


def test_new_task_ids_are_unique() -> None:
    ids = {new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_task_ids_sort_by_creation_time() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_task_id())
        time.sleep(0.002)
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    "value",
    [
        "a" * 31,
        "a" * 33,
        "A" * 32,
        "g" * 32,
        "",
        "0123456789abcdef0123456789abcde-",
        " " + "a" * 31,
    ],
)
def test_is_task_id_rejects_malformed_values(value: str) -> None:
    assert not is_task_id(value)


def test_is_task_id_accepts_generated_ids() -> None:
    assert all(is_task_id(new_task_id()) for _ in range(100))


# -- keys --------------------------------------------------------------------


def _hash_tag(key: str) -> str:
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


@pytest.mark.parametrize("priority", list(Priority))
def test_all_keys_of_a_priority_share_its_hash_tag(priority: Priority) -> None:
    keys = astuple(Keys().of(priority))
    assert len(set(keys)) == len(keys) >= 3
    assert all(_hash_tag(key) == priority.value for key in keys)


def test_priorities_have_distinct_keys() -> None:
    keys = Keys()
    streams = {keys.of(p).stream for p in Priority}
    assert len(streams) == len(Priority)


def test_keys_are_built_from_the_prefix() -> None:
    keys = Keys("custom")
    for key in (*astuple(keys.of(Priority.LOW)), keys.rate_limit("mail"), keys.lock("sweep")):
        assert key.startswith("custom:")
    assert _hash_tag(keys.rate_limit("mail")) == "mail"
    assert _hash_tag(keys.lock("sweep")) == "sweep"
    assert Keys().of(Priority.LOW).stream.startswith("relayq:")
