"""Every Redis key relayq uses, built from one prefix.

The keys of one priority share the hash tag `{<priority>}`, so each Lua script
touches a single slot and the design also runs on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from relayq.core.priorities import Priority

CONSUMER_GROUP = "workers"


@dataclass(frozen=True)
class PriorityKeys:
    """The keys of one priority's queue.

    Attributes:
        stream: Redis Stream of ready jobs; its consumer group's pending list is the in-flight set.
        delayed: sorted set of "taskId|type" scored by due time (ms), for retries and schedules.
        paused: present while the priority is paused.
        wake: a one-entry stream touched when the earliest due time changes or the
            queue resumes, so idle workers blocked on XREAD recompute their wait.
    """

    stream: str
    delayed: str
    paused: str
    wake: str


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (RELAYQ_KEY_PREFIX)."""

    prefix: str = "relayq"

    def of(self, priority: Priority) -> PriorityKeys:
        base = f"{self.prefix}:{{{priority.value}}}"
        return PriorityKeys(
            stream=f"{base}:stream",
            delayed=f"{base}:delayed",
            paused=f"{base}:paused",
            wake=f"{base}:wake",
        )

    def rate_limit(self, job_type: str) -> str:
        return f"{self.prefix}:ratelimit:{{{job_type}}}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{{{name}}}"

    def fence(self, name: str) -> str:
        """The fencing counter of lock `name`; same slot as the lock, so one script sets both."""
        return f"{self.prefix}:lock:{{{name}}}:fence"

    @property
    def recovery_report(self) -> str:
        """Hash of what recovery runs did, read by the API's /metrics."""
        return f"{self.prefix}:recovery:last"

    def quota(self, scope: str, window: int) -> str:
        """Hash of one quota's use in one window (relayq.core.quotas); all quotas share a
        slot, so one script takes from several at once."""
        return f"{self.prefix}:{{quota}}:{scope}:{window}"

    def switch(self, name: str) -> str:
        """Hash of a kill switch (relayq.core.switches): present while it is on."""
        return f"{self.prefix}:switch:{{{name}}}"

    @property
    def reconcile_report(self) -> str:
        """Hash of what reconciliation runs found, read by the API's /metrics."""
        return f"{self.prefix}:reconcile:last"
