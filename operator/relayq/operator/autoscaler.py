"""One WorkerAutoscaler's poll: read the queue, decide, scale, report.

A poll never leaves the Deployment half-done: when Redis, the Secret or the
spec cannot be read, the replicas stay as they are and the status says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from redis.exceptions import RedisError

from relayq.core.clients import RedisTarget
from relayq.operator import metrics
from relayq.operator.decision import Decision, Direction, Recommendation, decide, prune
from relayq.operator.kube import ApiException, Kube, ScaleState
from relayq.operator.queue_reading import (
    QueueReading,
    RedisPools,
    in_flight_by_pod,
    parse_sentinels,
    read_queue,
)
from relayq.operator.spec import AutoscalerSpec, SpecError

# A busy pod's deletion cost per job it holds: the ReplicaSet removes lower costs first.
COST_PER_JOB = 100
# Bounds one Redis read, so a blackholed Redis cannot stall the loop past a poll or two.
REDIS_READ_TIMEOUT_SECONDS = 5.0


class RedisConfigError(Exception):
    """The Secret a WorkerAutoscaler names is missing, or lacks a key it needs."""


@dataclass(frozen=True)
class Condition:
    status: bool
    reason: str
    message: str = ""


class AutoscalerLoop:
    """The state one WorkerAutoscaler keeps between polls, and the poll itself.

    Attributes:
        history: recent recommendations, for the stabilization windows.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        kube: Kube,
        pools: RedisPools,
        secret_refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._kube = kube
        self._pools = pools
        self._secret_refresh = secret_refresh_seconds
        self._clock = clock
        self.history: list[Recommendation] = []
        self._target: RedisTarget | None = None
        self._target_read_at = 0.0
        self._redis_ok: bool | None = None
        self._holding: str | None = None
        self._reported: dict[str, Any] | None = None

    async def poll(
        self, body: kopf.Body, logger: logging.Logger | logging.LoggerAdapter[Any]
    ) -> float:
        """One round; returns the seconds to wait before the next."""
        status: dict[str, Any] = {}
        conditions: dict[str, Condition] = {}
        try:
            spec = AutoscalerSpec.from_spec(body.spec)
        except SpecError as exc:
            conditions["Ready"] = Condition(False, "InvalidSpec", str(exc))
            await self._report(body, status, conditions)
            return float(body.spec.get("pollingIntervalSeconds", 2) or 2)

        try:
            scale = await self._kube.read_scale(self.namespace, spec.target)
        except ApiException as exc:
            if exc.status != 404:
                raise
            message = f"Deployment {spec.target} not found"
            conditions["Ready"] = Condition(False, "TargetNotFound", message)
            conditions["ScalingActive"] = Condition(False, "TargetNotFound", message)
            await self._report(body, status, conditions)
            return spec.polling_seconds
        status["currentReplicas"] = scale.status_replicas

        reading = await self._read(spec, body, status, conditions, logger)
        if reading is None:
            conditions["Ready"] = Condition(False, "RedisUnreachable", "replicas left unchanged")
            conditions["ScalingActive"] = Condition(
                False, "RedisUnreachable", "replicas left unchanged"
            )
            await self._report(body, status, conditions)
            return spec.polling_seconds

        snapshot = reading.snapshot
        status.update(
            backlog=snapshot.backlog,
            oldestAgeSeconds=round(snapshot.oldest_age_seconds, 1),
            inFlight=snapshot.in_flight,
        )
        metrics.BACKLOG.labels(self.namespace, self.name).set(snapshot.backlog)
        if spec.paused:
            # Not recorded in the history: after a resume the windows start afresh.
            self.history.clear()
            self._hold(body, "spec.paused is set: replicas left alone")
            status["desiredReplicas"] = scale.spec_replicas
            conditions["Ready"] = Condition(True, "Paused")
            conditions["ScalingActive"] = Condition(False, "Paused", "spec.paused is set")
            await self._report(body, status, conditions)
            return spec.polling_seconds

        now = self._clock()
        decision = decide(snapshot, scale.spec_replicas, spec.rules, self.history, now)
        self.history = prune([*self.history, decision.recommendation], spec.rules, now)
        metrics.DECISIONS.labels(spec.priority.value, decision.direction.value).inc()
        metrics.DESIRED_REPLICAS.labels(self.namespace, self.name).set(decision.desired)
        metrics.MAX_REPLICAS.labels(self.namespace, self.name).set(spec.rules.max_replicas)
        status["desiredReplicas"] = decision.desired

        if decision.direction is not Direction.NONE:
            await self._scale(body, spec, scale, reading, decision, logger)
            status["lastScaleTime"] = _now_iso()
            status["lastScaleReason"] = decision.reason
            self._holding = None
        elif snapshot.paused and decision.recommendation.replicas > scale.spec_replicas:
            self._hold(body, decision.reason)
        else:
            self._holding = None
        conditions["Ready"] = Condition(True, "Polling")
        conditions["ScalingActive"] = Condition(
            True, decision.direction.value.capitalize(), decision.reason
        )
        await self._report(body, status, conditions)
        return spec.polling_seconds

    async def _read(
        self,
        spec: AutoscalerSpec,
        body: kopf.Body,
        status: dict[str, Any],
        conditions: dict[str, Condition],
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> QueueReading | None:
        """The queue's numbers, or None (with the condition and event set) when unreachable."""
        try:
            target = await self._redis_target(spec)
            queue = self._pools.queue(target, spec.key_prefix)
            reading = await asyncio.wait_for(
                read_queue(queue, spec.priority), REDIS_READ_TIMEOUT_SECONDS
            )
        except (RedisError, OSError, TimeoutError, RedisConfigError, ValueError) as exc:
            # Read the Secret again next time: it may be what changed.
            self._target = None
            message = f"{type(exc).__name__}: {exc}"
            reason = "SecretInvalid" if isinstance(exc, RedisConfigError) else "RedisUnreachable"
            metrics.REDIS_ERRORS.labels(self.namespace, self.name).inc()
            conditions["RedisReachable"] = Condition(False, reason, message[:500])
            if self._redis_ok is not False:
                logger.warning(f"Redis unreachable, replicas left unchanged: {message}")
                kopf.event(body, type="Warning", reason="RedisUnreachable", message=message[:500])
            self._redis_ok = False
            return None
        conditions["RedisReachable"] = Condition(True, "Read")
        self._redis_ok = True
        return reading

    async def _redis_target(self, spec: AutoscalerSpec) -> RedisTarget:
        """The connection details from the Secret, read again every secret_refresh_seconds."""
        now = self._clock()
        if self._target is not None and now - self._target_read_at < self._secret_refresh:
            return self._target
        source = spec.redis
        try:
            values = await self._kube.secret_values(self.namespace, source.url.name)
        except ApiException as exc:
            if exc.status in (403, 404):
                raise RedisConfigError(
                    f"Secret {source.url.name} cannot be read ({exc.status} {exc.reason})"
                ) from exc
            raise
        url = _value(values, source.url.name, source.url.key)
        target = RedisTarget(url=url)
        if source.sentinels is not None and source.master is not None:
            target = RedisTarget(
                url=url,
                sentinels=parse_sentinels(
                    _value(values, source.sentinels.name, source.sentinels.key)
                ),
                master=_value(values, source.master.name, source.master.key),
                password=(
                    _value(values, source.password.name, source.password.key)
                    if source.password is not None
                    else None
                ),
                sentinel_password=(
                    _value(values, source.sentinel_password.name, source.sentinel_password.key)
                    if source.sentinel_password is not None
                    else None
                ),
            )
        self._target = target
        self._target_read_at = now
        return target

    async def _scale(
        self,
        body: kopf.Body,
        spec: AutoscalerSpec,
        scale: ScaleState,
        reading: QueueReading,
        decision: Decision,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        if decision.direction is Direction.DOWN:
            await self._set_deletion_costs(scale.selector, reading.in_flight_by_consumer, logger)
        await self._kube.patch_scale(self.namespace, spec.target, decision.desired)
        up = decision.direction is Direction.UP
        if up and reading.snapshot.oldest_age_seconds > 0:
            metrics.REACTION.labels(spec.priority.value).observe(
                reading.snapshot.oldest_age_seconds
            )
        message = f"{scale.spec_replicas} -> {decision.desired}: {decision.reason}"
        logger.info(f"Scaled {spec.target} {message}")
        kopf.event(
            body, type="Normal", reason="ScaledUp" if up else "ScaledDown", message=message[:1000]
        )

    async def _set_deletion_costs(
        self,
        selector: str,
        by_consumer: Mapping[str, int],
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        """Busy pods cost more to delete, idle ones 0, so a scale-down removes idle pods first."""
        if not selector:
            return
        busy = in_flight_by_pod(by_consumer)
        try:
            pods = await self._kube.pod_deletion_costs(self.namespace, selector)
            for pod, current in pods.items():
                cost = str(busy.get(pod, 0) * COST_PER_JOB)
                if current != cost:
                    await self._kube.set_deletion_cost(self.namespace, pod, int(cost))
        except ApiException as exc:
            # A hint only: the scale-down still happens, picking pods by the ReplicaSet's own rules.
            logger.warning(f"Could not set pod-deletion-cost ({exc.status} {exc.reason})")

    def _hold(self, body: kopf.Body, why: str) -> None:
        """A Paused event once per hold, not on every poll."""
        if self._holding is None:
            kopf.event(body, type="Normal", reason="Paused", message=why[:1000])
        self._holding = why

    async def _report(
        self, body: kopf.Body, status: dict[str, Any], conditions: Mapping[str, Condition]
    ) -> None:
        # Compared with what this loop last wrote, not with the body: the body's
        # copy of the status arrives through the watch and may lag a poll behind.
        old: Mapping[str, Any] = self._reported if self._reported is not None else body.status or {}
        status["conditions"] = merge_conditions(old.get("conditions") or [], conditions, _now_iso())
        generation = body.metadata.get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
        if self._reported is not None and all(old.get(k) == v for k, v in status.items()):
            return
        try:
            await self._kube.patch_status(self.namespace, self.name, status)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: the daemon is being stopped
                raise
            return
        self._reported = {**old, **status}


def merge_conditions(
    old: list[Mapping[str, Any]], new: Mapping[str, Condition], now: str
) -> list[dict[str, Any]]:
    """Old conditions updated by the new ones; a transition time moves only on a status change."""
    merged: dict[str, dict[str, Any]] = {str(c["type"]): dict(c) for c in old if "type" in c}
    for kind, cond in new.items():
        status = "True" if cond.status else "False"
        before = merged.get(kind, {})
        merged[kind] = {
            "type": kind,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": (
                before.get("lastTransitionTime", now) if before.get("status") == status else now
            ),
        }
    order = ["Ready", "RedisReachable", "ScalingActive"]
    return sorted(
        merged.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else 9
    )


def _value(values: Mapping[str, str], secret: str, key: str) -> str:
    value = values.get(key)
    if not value:
        raise RedisConfigError(f"Secret {secret} has no key {key!r}")
    return value.strip()


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
