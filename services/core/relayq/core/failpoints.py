"""Named points where a test can make the process die, to prove crash safety.

`RELAYQ_FAILPOINTS=transfer.after_sign,transfer.after_send` makes the process
exit at once (as SIGKILL would leave it: no cleanup, no ack) when it reaches
one of those points. Unset in production; reading it costs one dict lookup.
"""

from __future__ import annotations

import os

CRASH_EXIT_CODE = 137


def failpoint(name: str) -> None:
    armed = os.environ.get("RELAYQ_FAILPOINTS")
    if armed and name in armed.split(","):
        os._exit(CRASH_EXIT_CODE)
