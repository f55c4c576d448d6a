"""What recovery runs did, as the API's /metrics exports it.

Recovery is a CronJob: it exits after each run, so nothing scrapes it. Each run
writes its counts to one Redis hash (`Keys.recovery_report`); the API reads
that hash when Prometheus scrapes it and exports the numbers through a custom
collector. The hash's fields:

    runs_success, runs_failure, runs_skipped   runs by outcome (counters)
    redispatched_total, reclaimed_total, settled_total, deleted_total  (counters)
    fence            fencing token of the run that wrote the last_* fields
    last_outcome, last_run_ts, last_duration_seconds, last_success_ts
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayq.core.keys import Keys

OUTCOMES = ("success", "failure", "skipped")
ACTIONS = ("redispatched", "reclaimed", "settled", "deleted", "dead_lettered")
READ_TIMEOUT_SECONDS = 1.0


class RecoveryCollector(Collector):
    """Exports the last snapshot of the report hash; `refresh` reads it again."""

    def __init__(self) -> None:
        self._report: dict[str, str] = {}

    async def refresh(self, redis: Redis, keys: Keys) -> None:
        """Read the hash; on a Redis error keep the previous snapshot (a scrape must not fail)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            report = await asyncio.wait_for(
                _hgetall(redis, keys.recovery_report), READ_TIMEOUT_SECONDS
            )
            self._report = {_text(k): _text(v) for k, v in report.items()}

    def collect(self) -> Iterator[Metric]:
        r = self._report
        runs = CounterMetricFamily(
            "relayq_recovery_runs", "Recovery runs by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            runs.add_metric([outcome], _number(r, f"runs_{outcome}"))
        yield runs
        yield CounterMetricFamily(
            "relayq_recovery_redispatched",
            "Tasks recovery put back on Redis (lost dispatch, settled or re-added claims).",
            value=_number(r, "redispatched_total"),
        )
        actions = CounterMetricFamily(
            "relayq_recovery_actions", "Tasks recovery acted on, by action.", labels=["action"]
        )
        for action in ACTIONS:
            actions.add_metric([action], _number(r, f"{action}_total"))
        yield actions
        if "last_duration_seconds" in r:
            yield GaugeMetricFamily(
                "relayq_recovery_duration_seconds",
                "How long the last recovery run took.",
                value=_number(r, "last_duration_seconds"),
            )
        if "last_run_ts" in r:
            yield GaugeMetricFamily(
                "relayq_recovery_last_run_timestamp_seconds",
                "When the last recovery run ended (Unix time), whatever its outcome.",
                value=_number(r, "last_run_ts"),
            )
        # Absent until a run succeeds, so an alert can use absent() as well as age.
        if "last_success_ts" in r:
            yield GaugeMetricFamily(
                "relayq_recovery_last_success_timestamp_seconds",
                "When the last successful recovery run ended (Unix time).",
                value=_number(r, "last_success_ts"),
            )


_collector: RecoveryCollector | None = None


def recovery_collector() -> RecoveryCollector:
    """The process's collector, registered with the default registry on first use."""
    global _collector
    if _collector is None:
        _collector = RecoveryCollector()
        REGISTRY.register(_collector)
    return _collector


async def _hgetall(redis: Redis, key: str) -> dict[Any, Any]:
    return dict(await redis.hgetall(key))  # type: ignore[misc]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(report: Mapping[str, str], field: str) -> float:
    try:
        return float(report.get(field, 0))
    except ValueError:
        return 0.0
