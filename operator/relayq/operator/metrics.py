"""The operator's Prometheus metrics (one set per process, served by main)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "relayq_operator_decisions_total",
    "Scaling decisions, by priority and direction (up, down, none).",
    ["priority", "direction"],
)
DESIRED_REPLICAS = Gauge(
    "relayq_operator_desired_replicas",
    "Replicas the operator wants for a WorkerAutoscaler's Deployment.",
    ["namespace", "name"],
)
MAX_REPLICAS = Gauge(
    "relayq_operator_max_replicas",
    "A WorkerAutoscaler's maxReplicas, to tell a queue that outgrows its ceiling.",
    ["namespace", "name"],
)
BACKLOG = Gauge(
    "relayq_operator_backlog",
    "Backlog (waiting + in flight + due delayed) seen at the last poll.",
    ["namespace", "name"],
)
REDIS_ERRORS = Counter(
    "relayq_operator_redis_errors_total",
    "Polls that could not read Redis; the replicas were left as they were.",
    ["namespace", "name"],
)
REACTION = Histogram(
    "relayq_operator_reaction_seconds",
    "On a scale-up, how long the oldest waiting job had waited when the scale was patched.",
    ["priority"],
    buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)


def forget(namespace: str, name: str) -> None:
    """Drop the series of a WorkerAutoscaler that is gone."""
    for metric in (DESIRED_REPLICAS, MAX_REPLICAS, BACKLOG, REDIS_ERRORS):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, name)
