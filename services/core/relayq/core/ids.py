"""Task ids: 32 hex characters that sort by creation time."""

from __future__ import annotations

import re
import secrets
import time

TASK_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def new_task_id() -> str:
    """12 hex digits of milliseconds since the epoch, then 80 random bits."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def is_task_id(value: str) -> bool:
    return bool(TASK_ID_PATTERN.fullmatch(value))
