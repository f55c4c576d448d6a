"""Structured JSON logs and the Prometheus metrics every relayq process shares.

Metric names follow Prometheus conventions; label values come from bounded
sets (priorities, registered job types, fixed outcomes).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Buckets span the SLAs: sub-second for critical up to minutes for low.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

ENQUEUED = Counter("relayq_jobs_enqueued_total", "Jobs put on a Redis queue.", ["priority", "type"])
JOBS = Counter(
    "relayq_jobs_total",
    "Job runs by outcome: completed, retried, failed, deferred, dropped.",
    ["priority", "type", "outcome"],
)
RUN_SECONDS = Histogram(
    "relayq_job_run_seconds", "Handler run time.", ["priority", "type"], buckets=RUN_BUCKETS
)
QUEUE_WAIT_SECONDS = Histogram(
    "relayq_queue_wait_seconds",
    "Time from ready (enqueue or due) to start.",
    ["priority"],
    buckets=WAIT_BUCKETS,
)
SLA_STARTS = Counter(
    "relayq_sla_starts_total",
    "Job starts by whether the queue wait met the priority's SLA.",
    ["priority", "met"],
)
IN_FLIGHT = Gauge("relayq_jobs_in_flight", "Jobs this worker is running.", ["priority"])
BACKLOG = Gauge("relayq_queue_backlog", "Undelivered + in flight + due delayed jobs.", ["priority"])
RECLAIMED = Counter(
    "relayq_jobs_reclaimed_total", "Claims taken over from dead workers.", ["priority"]
)
DEAD_LETTERED = Counter(
    "relayq_jobs_dead_lettered_total",
    "Jobs moved to the dead letters, by reason: attempts, poison, permanent, unknown-type.",
    ["priority", "reason"],
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extras."""

    _skip = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured fields (task_id, priority, …)."""
    logger.log(level, message, extra=fields)


API_REQUESTS = Counter(
    "relayq_api_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "relayq_api_request_seconds",
    "HTTP request latency by route template.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
