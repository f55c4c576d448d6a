"""What reconciliation runs found, as the API's /metrics exports it.

`relayq reconcile` (a CronJob; the logic is the relayer's) writes each run to
one Redis hash (`Keys.reconcile_report`), read at scrape time (see
relayq.core.run_report). The hash's fields:

    discrepancies:<kind>   what the last successful run found, per kind
    runs_success, runs_failure   runs by outcome (counters)
    last_run_ts, last_success_ts   Unix times
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY
from redis.asyncio import Redis

from relayq.core.keys import Keys
from relayq.core.run_report import ReportCollector

OUTCOMES = ("success", "failure")
PREFIX = "discrepancies:"


async def record_reconcile_run(
    redis: Redis, keys: Keys, counts: Mapping[str, int] | None, at: float | None = None
) -> None:
    """Record a run: `counts` per discrepancy kind, or None for a run that failed.

    A failed run leaves the last successful run's counts in place.
    """
    at = time.time() if at is None else at
    outcome = "failure" if counts is None else "success"
    pipe = redis.pipeline(transaction=True)
    pipe.hincrby(keys.reconcile_report, f"runs_{outcome}", 1)
    fields: dict[str, float | int] = {"last_run_ts": at}
    if counts is not None:
        fields["last_success_ts"] = at
        fields.update({PREFIX + kind: n for kind, n in counts.items()})
    pipe.hset(keys.reconcile_report, mapping=fields)
    await pipe.execute()


class ReconcileCollector(ReportCollector):
    """Exports the last snapshot of the reconciliation report."""

    def key(self, keys: Keys) -> str:
        return keys.reconcile_report

    def collect(self) -> Iterator[Metric]:
        r = self.report
        runs = CounterMetricFamily(
            "relayq_reconcile_runs", "Reconciliation runs by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            runs.add_metric([outcome], self.number(f"runs_{outcome}"))
        yield runs
        found = GaugeMetricFamily(
            "relayq_reconcile_discrepancies",
            "Discrepancies between the chain and the purchase records the last successful"
            " reconciliation run found, by kind.",
            labels=["kind"],
        )
        for field in sorted(f for f in r if f.startswith(PREFIX)):
            found.add_metric([field[len(PREFIX) :]], self.number(field))
        yield found
        # Absent until a run succeeds, so an alert can use absent() as well as age.
        if "last_success_ts" in r:
            yield GaugeMetricFamily(
                "relayq_reconcile_last_success_timestamp_seconds",
                "When the last successful reconciliation run ended (Unix time).",
                value=self.number("last_success_ts"),
            )


_collector: ReconcileCollector | None = None


def reconcile_collector() -> ReconcileCollector:
    """The process's collector, registered with the default registry on first use."""
    global _collector
    if _collector is None:
        _collector = ReconcileCollector()
        REGISTRY.register(_collector)
    return _collector
