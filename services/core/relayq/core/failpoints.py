"""Named points where a test can make the process die, to prove crash safety.

`RELAYQ_FAILPOINTS=transfer.after_sign,transfer.after_send` makes the process
exit at once (as SIGKILL would leave it: no cleanup, no ack) when it reaches
one of those points. Unset in production; reading it costs one dict lookup.

In-process tests use `trapped(handler)` instead: within it (the current task
and the tasks it starts), each failpoint reached calls `handler(name)`, which
may raise to end the run right there, as a crash would, while the test's own
process goes on. Unused in production; checking costs one context lookup.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CRASH_EXIT_CODE = 137

_TRAP: ContextVar[Callable[[str], None] | None] = ContextVar("relayq_failpoint_trap", default=None)


def failpoint(name: str) -> None:
    trap = _TRAP.get()
    if trap is not None:
        trap(name)
    armed = os.environ.get("RELAYQ_FAILPOINTS")
    if armed and name in armed.split(","):
        os._exit(CRASH_EXIT_CODE)


@contextmanager
def trapped(handler: Callable[[str], None]) -> Iterator[None]:
    """Call `handler(name)` at every failpoint reached in this context (tests only)."""
    token = _TRAP.set(handler)
    try:
        yield
    finally:
        _TRAP.reset(token)
