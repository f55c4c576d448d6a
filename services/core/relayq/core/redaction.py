"""Redaction of the personal data a job type declares in its payload and result.

A job type names the fields that may hold personal data (a mail address, a
password-reset link) as dotted paths rooted at `payload` or `result`
(`JobType.redact`, e.g. `payload.to`, `payload.user.email`, `result.link`).
The paths travel on the task record, so every process redacts alike, job
modules loaded or not. Every view of a task goes through `Task.to_public`,
which shows those fields as REDACTED: the API's task views and listings, the
CLI's output, the review listings, and whatever is built on them later. The
handler gets the payload as submitted.

A path that meets a list applies to each element (`payload.recipients.email`);
a path absent from the value is skipped. Field names never hold "." (the
store refuses them, relayq.core.jobs), so a dotted path is unambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

REDACTED = "[redacted]"
ROOTS = ("payload", "result")
# Declared values shorter than this are not searched for in free text (an error
# message): replacing every "42" would garble the text and hide nobody.
MIN_TEXT_VALUE = 4


def check_paths(paths: Sequence[str]) -> None:
    """Raise ValueError unless every path is `payload.<field>[.<field>...]` or `result....`."""
    if isinstance(paths, str):
        raise ValueError("redact takes a tuple of paths, not one string")
    for path in paths:
        root, _, rest = path.partition(".")
        if root not in ROOTS or not rest or "" in rest.split("."):
            raise ValueError(
                f"redact path {path!r} must be 'payload.<field>' or 'result.<field>', "
                "dotted into nested objects"
            )


def redact(value: Any, paths: Iterable[str], root: str) -> Any:
    """`value` (a task's payload or result, named by `root`) with each declared field
    under `root` replaced by REDACTED. The value is not changed: the containers on
    a redacted path are copied."""
    for segments in _segments(paths, root):
        value = _replace(value, segments)
    return value


def redact_text(text: str, payload: Any, paths: Iterable[str]) -> str:
    """`text` (an error message) with every declared string value of `payload`
    replaced by REDACTED: a handler's error may quote the address it failed to mail."""
    if not text:
        return text
    found = {s for segments in _segments(paths, "payload") for s in _strings(payload, segments)}
    for value in sorted(found, key=len, reverse=True):
        if len(value) >= MIN_TEXT_VALUE:
            text = text.replace(value, REDACTED)
    return text


def redact_texts(value: Any, payload: Any, paths: Iterable[str]) -> Any:
    """`value` (a parked task's review details) with `redact_text` applied to every
    string in it: a handler may quote what it could not decide about."""
    if isinstance(value, str):
        return redact_text(value, payload, paths)
    if isinstance(value, list):
        return [redact_texts(item, payload, paths) for item in value]
    if isinstance(value, Mapping):
        return {key: redact_texts(item, payload, paths) for key, item in value.items()}
    return value


def _segments(paths: Iterable[str], root: str) -> Iterator[list[str]]:
    for path in paths:
        head, _, rest = path.partition(".")
        if head == root and rest:
            yield rest.split(".")


def _replace(value: Any, segments: list[str]) -> Any:
    if not segments:
        return REDACTED
    if isinstance(value, list):
        return [_replace(item, segments) for item in value]
    if isinstance(value, Mapping) and segments[0] in value:
        return {**value, segments[0]: _replace(value[segments[0]], segments[1:])}
    return value


def _strings(value: Any, segments: list[str]) -> Iterator[str]:
    """Every string at or below the path in `value`."""
    if isinstance(value, list):
        for item in value:
            yield from _strings(item, segments)
    elif segments:
        if isinstance(value, Mapping) and segments[0] in value:
            yield from _strings(value[segments[0]], segments[1:])
    elif isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, [])
