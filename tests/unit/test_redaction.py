"""The redaction of a job type's declared fields (relayq.core.redaction), and the task
view every listing goes through (Task.to_public)."""

from __future__ import annotations

import ast
import copy
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relayq.core.jobs import JobType, Task, TaskState
from relayq.core.priorities import Priority
from relayq.core.redaction import REDACTED, check_paths, redact, redact_text, redact_texts
from relayq.core.telemetry import DOCUMENT_LOGGERS, configure_logging
from relayq.dev.servers import REPO_ROOT

PAYLOAD: dict[str, Any] = {
    "to": "alice@example.com",
    "user": {"name": "Alice", "email": "alice@example.com", "prefs": {"lang": "en"}},
    "recipients": [{"email": "bob@example.com", "role": "cc"}, {"role": "bcc"}, "plain"],
    "link": "https://shop.example/reset?token=s3cr3t",
    "count": 2,
}
PATHS = (
    "payload.to",
    "payload.user.email",
    "payload.recipients.email",
    "payload.link",
    "payload.absent",
    "payload.user.absent.deeper",
    "payload.count.inside",
    "result.sentTo",
)


async def _noop(payload: dict[str, Any], ctx: Any) -> None:
    return None


def test_declared_fields_are_redacted_nested_and_in_lists_the_rest_kept() -> None:
    out = redact(PAYLOAD, PATHS, "payload")

    assert out == {
        "to": REDACTED,
        "user": {"name": "Alice", "email": REDACTED, "prefs": {"lang": "en"}},
        "recipients": [{"email": REDACTED, "role": "cc"}, {"role": "bcc"}, "plain"],
        "link": REDACTED,
        "count": 2,
    }


def test_redaction_leaves_the_original_untouched() -> None:
    before = copy.deepcopy(PAYLOAD)
    redact(PAYLOAD, PATHS, "payload")
    assert before == PAYLOAD


def test_absent_paths_and_other_roots_change_nothing() -> None:
    assert redact({"x": 1}, PATHS, "payload") == {"x": 1}
    assert redact({"sentTo": "a@b.c", "id": 7}, PATHS, "result") == {"sentTo": REDACTED, "id": 7}
    assert redact(None, PATHS, "result") is None
    assert redact("a plain result", PATHS, "result") == "a plain result"
    assert redact([{"sentTo": "x"}, {"id": 1}], PATHS, "result") == [
        {"sentTo": REDACTED},
        {"id": 1},
    ]


def test_a_whole_object_or_list_may_be_redacted() -> None:
    assert redact(PAYLOAD, ["payload.user"], "payload")["user"] == REDACTED
    assert redact(PAYLOAD, ["payload.recipients"], "payload")["recipients"] == REDACTED


def test_error_text_loses_the_declared_values() -> None:
    text = "550 mailbox alice@example.com unavailable (cc bob@example.com), role cc, count 2"

    out = redact_text(text, PAYLOAD, PATHS)

    assert out == f"550 mailbox {REDACTED} unavailable (cc {REDACTED}), role cc, count 2"
    assert redact_text("nothing declared here", PAYLOAD, ()) == "nothing declared here"
    # Too short to search for: "cc" under a declared whole object is kept in the text.
    assert redact_text("role cc", PAYLOAD, ["payload.recipients"]) == "role cc"


@pytest.mark.parametrize(
    "paths",
    [("to",), ("payload",), ("payload.",), ("payload..to",), ("results.x",), "payload.to"],
)
def test_a_path_not_rooted_at_payload_or_result_is_refused(paths: Any) -> None:
    with pytest.raises(ValueError, match="redact"):
        check_paths(paths)
    with pytest.raises(ValueError, match="redact"):
        JobType("bad", _noop, redact=paths)


def test_the_task_view_redacts_payload_result_and_error() -> None:
    task = Task(
        id="0" * 32,
        type="mail",
        priority=Priority.HIGH,
        payload=PAYLOAD,
        state=TaskState.FAILED,
        version=3,
        attempts=1,
        max_attempts=1,
        attempt_budget=1,
        idempotency_key=None,
        payload_hash="h",
        created_at=datetime.now(UTC),
        last_error="PermanentError: mailbox alice@example.com does not exist",
        result={"sentTo": "alice@example.com"},
        review={"reason": "bounced", "details": {"bounce": "550 alice@example.com"}},
        redact=PATHS,
    )

    view = task.to_public()

    assert "alice@example.com" not in repr(view) and "s3cr3t" not in repr(view)
    assert view["payload"]["user"]["name"] == "Alice"
    assert view["result"] == {"sentTo": REDACTED}
    assert view["lastError"] == f"PermanentError: mailbox {REDACTED} does not exist"
    assert view["review"] == {"reason": "bounced", "details": {"bounce": f"550 {REDACTED}"}}
    assert task.payload["to"] == "alice@example.com"  # the record itself is untouched


def test_debug_logging_leaves_out_the_loggers_that_print_whole_documents() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, [logging.getLogger(n).level for n in DOCUMENT_LOGGERS])
    try:
        configure_logging("DEBUG")
        assert logging.getLogger("relayq.worker").isEnabledFor(logging.DEBUG)
        assert DOCUMENT_LOGGERS
        for name in DOCUMENT_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        configure_logging("WARNING")
        assert not logging.getLogger("pymongo.command").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in zip(DOCUMENT_LOGGERS, saved[2], strict=True):
            logging.getLogger(name).setLevel(level)


LOG_CALLS = {"log_event", "debug", "info", "warning", "error", "exception", "critical", "log"}
SOURCES = [*(REPO_ROOT / "services").glob("*/relayq"), REPO_ROOT / "operator/relayq"]


def _log_calls_with_task_data(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name not in LOG_CALLS:
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for inner in ast.walk(arg):
                if isinstance(inner, ast.Attribute) and inner.attr in {"payload", "result"}:
                    found.append(f"{path}:{node.lineno}")
    return found


def test_no_log_line_takes_a_task_payload_or_result_raw() -> None:
    """A log line that wants to show a task's data takes it from Task.to_public."""
    files = [p for root in SOURCES for p in root.rglob("*.py")]
    assert len(files) > 50
    assert [hit for p in files for hit in _log_calls_with_task_data(p)] == []


def test_texts_anywhere_in_a_value_lose_the_declared_values() -> None:
    review = {"reason": "bounced", "details": {"bounce": ["550 alice@example.com"], "n": 2}}

    out = redact_texts(review, PAYLOAD, PATHS)

    assert out == {"reason": "bounced", "details": {"bounce": [f"550 {REDACTED}"], "n": 2}}
    assert redact_texts(None, PAYLOAD, PATHS) is None
