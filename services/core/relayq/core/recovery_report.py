"""What recovery runs did, as the API's /metrics exports it.

Each run writes its counts to one Redis hash (`Keys.recovery_report`), read
at scrape time (see relayq.core.run_report). The hash's fields:

    runs_success, runs_failure, runs_skipped   runs by outcome (counters)
    redispatched_total, reclaimed_total, settled_total, deleted_total  (counters)
    fence            fencing token of the run that wrote the last_* fields
    last_outcome, last_run_ts, last_duration_seconds, last_success_ts
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY

from relayq.core.keys import Keys
from relayq.core.run_report import ReportCollector

OUTCOMES = ("success", "failure", "skipped")
ACTIONS = ("redispatched", "reclaimed", "settled", "deleted", "dead_lettered")


class RecoveryCollector(ReportCollector):
    """Exports the last snapshot of the recovery report."""

    def key(self, keys: Keys) -> str:
        return keys.recovery_report

    def collect(self) -> Iterator[Metric]:
        r = self.report
        runs = CounterMetricFamily(
            "relayq_recovery_runs", "Recovery runs by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            runs.add_metric([outcome], self.number(f"runs_{outcome}"))
        yield runs
        yield CounterMetricFamily(
            "relayq_recovery_redispatched",
            "Tasks recovery put back on Redis (lost dispatch, settled or re-added claims).",
            value=self.number("redispatched_total"),
        )
        actions = CounterMetricFamily(
            "relayq_recovery_actions", "Tasks recovery acted on, by action.", labels=["action"]
        )
        for action in ACTIONS:
            actions.add_metric([action], self.number(f"{action}_total"))
        yield actions
        if "last_duration_seconds" in r:
            yield GaugeMetricFamily(
                "relayq_recovery_duration_seconds",
                "How long the last recovery run took.",
                value=self.number("last_duration_seconds"),
            )
        if "last_run_ts" in r:
            yield GaugeMetricFamily(
                "relayq_recovery_last_run_timestamp_seconds",
                "When the last recovery run ended (Unix time), whatever its outcome.",
                value=self.number("last_run_ts"),
            )
        # Absent until a run succeeds, so an alert can use absent() as well as age.
        if "last_success_ts" in r:
            yield GaugeMetricFamily(
                "relayq_recovery_last_success_timestamp_seconds",
                "When the last successful recovery run ended (Unix time).",
                value=self.number("last_success_ts"),
            )


_collector: RecoveryCollector | None = None


def recovery_collector() -> RecoveryCollector:
    """The process's collector, registered with the default registry on first use."""
    global _collector
    if _collector is None:
        _collector = RecoveryCollector()
        REGISTRY.register(_collector)
    return _collector
