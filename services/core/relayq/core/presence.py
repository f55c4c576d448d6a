"""Which task ids Redis holds for one priority: stream entries and delayed jobs.

One pass per run over the stream (undelivered and in-flight entries alike: an
entry is deleted only with its ack) and the delayed set, paged, into a Python
set. It is O(entries) per run and not atomic: a job moving between the two
while the scan runs may be missed. That only makes it a candidate; every
candidate is re-checked atomically by `redispatch.lua` before it is added. A
per-priority index maintained by every script would make the check O(1), at
the price of a write on every enqueue and ack; for a CronJob the scan is the
simpler choice (see the README for its measured cost).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from relayq.core.keys import PriorityKeys

PAGE = 5000
# A margin under the scan's start time for the stream id redispatch.lua
# re-reads from, against an XADD whose id was taken just before the scan began.
SINCE_MARGIN_MS = 1000


@dataclass
class Presence:
    """What one scan saw.

    Attributes:
        task_ids: ids of tasks with a stream entry or a delayed-set member.
        since_id: stream id from which later additions may have been missed.
        stream_entries: entries seen in the stream.
        delayed_entries: members seen in the delayed set.
    """

    task_ids: set[str] = field(default_factory=set)
    since_id: str = "0-0"
    stream_entries: int = 0
    delayed_entries: int = 0


async def scan(redis: Redis, keys: PriorityKeys) -> Presence:
    seconds, micros = await redis.time()
    since_ms = max(0, int(seconds) * 1000 + int(micros) // 1000 - SINCE_MARGIN_MS)
    found = Presence(since_id=f"{since_ms}-0")
    start = "-"
    while True:
        entries = await redis.xrange(keys.stream, min=start, max="+", count=PAGE)
        for _, fields in entries:
            task_id = fields.get("t")
            if task_id is not None:
                found.task_ids.add(task_id)
        found.stream_entries += len(entries)
        if len(entries) < PAGE:
            break
        start = f"({entries[-1][0]}"
    cursor = 0
    while True:
        cursor, members = await redis.zscan(keys.delayed, cursor, count=PAGE)
        for member, _ in members:
            found.task_ids.add(member.split("|", 1)[0])
        found.delayed_entries += len(members)
        if cursor == 0:
            break
    return found
