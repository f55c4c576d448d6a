"""A WorkerAutoscaler's spec as typed values, read from the custom resource.

The API server already validated the object against the CRD's schema; this
module only converts names and applies the same defaults, so a spec written
before a default changed is read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relayq.core.priorities import Priority

GROUP = "relayq.io"
VERSION = "v1alpha1"
PLURAL = "workerautoscalers"
KIND = "WorkerAutoscaler"

DEFAULT_KEY_PREFIX = "relayq"
DEFAULT_POLLING_SECONDS = 2.0
DEFAULT_UP_WINDOW_SECONDS = 0.0
DEFAULT_DOWN_WINDOW_SECONDS = 60.0


class SpecError(ValueError):
    """A spec the operator cannot act on (the schema should have refused it)."""


@dataclass(frozen=True)
class ScalingRules:
    """The numbers the decision uses.

    Attributes:
        min_replicas: floor; 0 lets an idle priority scale to zero.
        max_replicas: ceiling.
        target_backlog_per_replica: backlog one replica is meant to carry.
        activation_backlog: below this, with nothing in flight, the priority is idle.
        sla_target_seconds: oldest waiting age that forces a scale-up, None for no SLA.
        up_window_seconds: scale-up takes the lowest recommendation of this window.
        up_max_step: most replicas added in one decision, None for no limit.
        down_window_seconds: scale-down takes the highest recommendation of this window.
        down_max_step: most replicas removed in one decision, None for no limit.
    """

    min_replicas: int
    max_replicas: int
    target_backlog_per_replica: int
    activation_backlog: int = 0
    sla_target_seconds: float | None = None
    up_window_seconds: float = DEFAULT_UP_WINDOW_SECONDS
    up_max_step: int | None = None
    down_window_seconds: float = DEFAULT_DOWN_WINDOW_SECONDS
    down_max_step: int | None = None

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise SpecError("need 0 <= minReplicas <= maxReplicas and maxReplicas >= 1")
        if self.target_backlog_per_replica < 1:
            raise SpecError("targetBacklogPerReplica must be at least 1")
        if self.activation_backlog < 0:
            raise SpecError("activationBacklog must not be negative")
        if self.up_window_seconds < 0 or self.down_window_seconds < 0:
            raise SpecError("stabilization windows must not be negative")
        for step in (self.up_max_step, self.down_max_step):
            if step is not None and step < 1:
                raise SpecError("maxStep must be at least 1")
        if self.sla_target_seconds is not None and self.sla_target_seconds <= 0:
            raise SpecError("slaTargetSeconds must be positive")


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Secret in the WorkerAutoscaler's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class RedisSource:
    """Where the Redis connection details live.

    Attributes:
        url: Secret key holding the Redis URL (used without Sentinel, and for its
            database number and password with it).
        sentinels: Secret key holding `host:port,host:port` of the Sentinels
            (the meaning of RELAYQ_REDIS_SENTINELS), None for a plain URL.
        master: Secret key holding the master's name (RELAYQ_REDIS_SENTINEL_MASTER).
        password: Secret key holding the Redis password (RELAYQ_REDIS_PASSWORD), optional.
        sentinel_password: Secret key holding the Sentinels' password
            (RELAYQ_REDIS_SENTINEL_PASSWORD), optional.
    """

    url: SecretKeyRef
    sentinels: SecretKeyRef | None = None
    master: SecretKeyRef | None = None
    password: SecretKeyRef | None = None
    sentinel_password: SecretKeyRef | None = None


@dataclass(frozen=True)
class AutoscalerSpec:
    """Everything one WorkerAutoscaler asks for."""

    target: str
    priority: Priority
    redis: RedisSource
    rules: ScalingRules
    key_prefix: str = DEFAULT_KEY_PREFIX
    polling_seconds: float = DEFAULT_POLLING_SECONDS
    paused: bool = False

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AutoscalerSpec:
        """Read the resource's `spec`; SpecError names the first field it cannot use."""
        try:
            return cls._read(spec)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"invalid WorkerAutoscaler spec: {exc!r}") from exc

    @classmethod
    def _read(cls, spec: Mapping[str, Any]) -> AutoscalerSpec:
        redis = spec["redis"]
        secret = redis["secretRef"]
        name = str(secret["name"])
        sentinel = redis.get("sentinel") or {}

        def ref(key: str | None) -> SecretKeyRef | None:
            return None if not key else SecretKeyRef(name, str(key))

        up = spec.get("scaleUp") or {}
        down = spec.get("scaleDown") or {}
        sla = spec.get("slaTargetSeconds")
        rules = ScalingRules(
            min_replicas=int(spec.get("minReplicas", 0)),
            max_replicas=int(spec["maxReplicas"]),
            target_backlog_per_replica=int(spec["targetBacklogPerReplica"]),
            activation_backlog=int(spec.get("activationBacklog", 0)),
            sla_target_seconds=None if sla is None else float(sla),
            up_window_seconds=float(
                up.get("stabilizationWindowSeconds", DEFAULT_UP_WINDOW_SECONDS)
            ),
            up_max_step=_optional_int(up.get("maxStep")),
            down_window_seconds=float(
                down.get("stabilizationWindowSeconds", DEFAULT_DOWN_WINDOW_SECONDS)
            ),
            down_max_step=_optional_int(down.get("maxStep")),
        )
        polling = float(spec.get("pollingIntervalSeconds", DEFAULT_POLLING_SECONDS))
        if polling <= 0:
            raise SpecError("pollingIntervalSeconds must be positive")
        return cls(
            target=str(spec["scaleTargetRef"]["name"]),
            priority=Priority.parse(str(spec["priority"])),
            redis=RedisSource(
                url=SecretKeyRef(name, str(secret["key"])),
                sentinels=ref(sentinel.get("sentinelsKey")),
                master=ref(sentinel.get("masterNameKey")),
                password=ref(sentinel.get("passwordKey")),
                sentinel_password=ref(sentinel.get("sentinelPasswordKey")),
            ),
            rules=rules,
            key_prefix=str(spec.get("keyPrefix", DEFAULT_KEY_PREFIX)),
            polling_seconds=polling,
            paused=bool(spec.get("paused", False)),
        )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
