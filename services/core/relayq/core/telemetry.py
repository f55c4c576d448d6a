"""Structured JSON logs and the Prometheus metrics every relayq process shares.

Metric names follow Prometheus conventions; label values come from bounded
sets (priorities, registered job types, fixed outcomes). Every metric is listed
in docs/metrics.md, which a unit test keeps in step with the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError, ResponseError

from relayq.core.keys import CONSUMER_GROUP
from relayq.core.priorities import Priority

if TYPE_CHECKING:
    from relayq.core.queue import Queue

# Buckets span the SLAs: sub-second for critical up to minutes for low.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

ENQUEUED = Counter("relayq_jobs_enqueued_total", "Jobs put on a Redis queue.", ["priority", "type"])
JOBS = Counter(
    "relayq_jobs_total",
    "Job runs by outcome: completed, retried, failed, deferred, parked, dropped.",
    ["priority", "type", "outcome"],
)
RUN_SECONDS = Histogram(
    "relayq_job_run_seconds", "Handler run time.", ["priority", "type"], buckets=RUN_BUCKETS
)
QUEUE_WAIT_SECONDS = Histogram(
    "relayq_queue_wait_seconds",
    "Time from ready (enqueue or due) to start.",
    ["priority", "type"],
    buckets=WAIT_BUCKETS,
)
SLA_STARTS = Counter(
    "relayq_sla_starts_total",
    "Job starts by whether the queue wait met the priority's SLA.",
    ["priority", "met"],
)
SLA_SECONDS = Gauge(
    "relayq_sla_seconds",
    "The priority's queue-wait target (absent when it has none).",
    ["priority"],
)
IN_FLIGHT = Gauge("relayq_jobs_in_flight", "Jobs this worker is running.", ["priority"])
WORKER_SLOTS = Gauge(
    "relayq_worker_slots",
    "Jobs this worker process may run at once (its concurrency).",
    ["priority"],
)
# The queue gauges are read from Redis by each worker (its own priority) and by
# the API at scrape time (every priority, so an empty worker Deployment still
# shows its backlog). Aggregate them with max by (priority).
BACKLOG = Gauge("relayq_queue_backlog", "Undelivered + in flight + due delayed jobs.", ["priority"])
OLDEST_WAITING_AGE = Gauge(
    "relayq_queue_oldest_waiting_age_seconds",
    "Age of the oldest undelivered job, from when it became ready; 0 when none.",
    ["priority"],
)
OLDEST_ACTIVE_AGE = Gauge(
    "relayq_queue_oldest_active_age_seconds",
    "Age of the oldest delivered, unacknowledged job, from when it became ready; 0 when none.",
    ["priority"],
)
PAUSED = Gauge("relayq_queue_paused", "1 while claiming is paused for the priority.", ["priority"])
DEPENDENCY_UP = Gauge(
    "relayq_dependency_up",
    "1 if the dependency answered the API's last probe (readiness or scrape), else 0.",
    ["dependency"],
)
RECLAIMED = Counter(
    "relayq_jobs_reclaimed_total", "Claims taken over from dead workers.", ["priority"]
)
DEAD_LETTERED = Counter(
    "relayq_jobs_dead_lettered_total",
    "Jobs moved to the dead letters, by reason: attempts, poison, permanent, unknown-type,"
    " refused (a job module's verdict, e.g. a swap the chain refused).",
    ["priority", "reason"],
)
PARKED = Counter(
    "relayq_jobs_parked_total",
    "Jobs parked for an operator's review (needs_review), by the job module's reason.",
    ["priority", "reason"],
)
CANCELLED = Counter(
    "relayq_jobs_cancelled_total", "Jobs an operator cancelled before they ran.", ["priority"]
)
PROMOTED = Counter(
    "relayq_jobs_promoted_total", "Delayed jobs an operator ran ahead of time.", ["priority"]
)
RESOLVED = Counter(
    "relayq_jobs_resolved_total",
    "Parked jobs an operator marked completed on evidence, by the job module's resolution.",
    ["priority", "resolution"],
)
# The type label of a job whose type no registry knows: keeps label values bounded.
UNKNOWN_TYPE_LABEL = "unknown"
DEAD_LETTER_REASONS = ("attempts", "poison", "permanent", "unknown-type", "refused")


def init_job_metrics(types: Iterable[str]) -> None:
    """Export the job outcome counters dashboards and alerts read at 0, before any job ran.

    Bounded: priorities x registered types x three outcomes.
    """
    for job_type in types:
        for priority in Priority:
            for outcome in ("completed", "retried", "failed"):
                JOBS.labels(priority=priority.value, type=job_type, outcome=outcome)


def init_worker_metrics(priority: Priority, concurrency: int) -> None:
    """Export a worker's series from its start, the counters at 0.

    A counter series that first appears at 1 hides that increment from
    `rate`/`increase`: the first dead letter after a restart would not alert.
    """
    p = priority.value
    WORKER_SLOTS.labels(priority=p).set(concurrency)
    IN_FLIGHT.labels(priority=p)
    RECLAIMED.labels(priority=p)
    for met in ("true", "false"):
        SLA_STARTS.labels(priority=p, met=met)
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERED.labels(priority=p, reason=reason)


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


# Loggers whose DEBUG records carry whole documents (PyMongo's command log holds
# task payloads, personal data included): never below INFO, whatever the level.
DOCUMENT_LOGGERS = ("pymongo.command",)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in DOCUMENT_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


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


async def refresh_queue_gauges(queue: Queue, priorities: Iterable[Priority] = Priority) -> None:
    """Read backlog, oldest waiting and oldest active ages, and the pause flag from Redis.

    Raises RedisError or OSError when Redis cannot be read; the gauges keep
    their last values then (a scrape of a stale value beats a missing series).
    """
    for priority in priorities:
        p = priority.value
        stats = await queue.stats(priority)
        BACKLOG.labels(priority=p).set(stats.backlog)
        OLDEST_WAITING_AGE.labels(priority=p).set(stats.oldest_waiting_age_seconds)
        PAUSED.labels(priority=p).set(1 if stats.paused else 0)
        OLDEST_ACTIVE_AGE.labels(priority=p).set(await _oldest_active_age(queue, priority))


async def _oldest_active_age(queue: Queue, priority: Priority) -> float:
    # XPENDING's summary names the smallest pending entry id, whose ms part is
    # when the job became ready: one cheap call, whatever the number in flight.
    async with queue.redis.pipeline(transaction=False) as pipe:
        pipe.xpending(queue.keys.of(priority).stream, CONSUMER_GROUP)
        pipe.time()
        try:
            pending, (sec, usec) = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # no worker created the group yet: nothing in flight
                return 0.0
            raise
    oldest = pending.get("min") if pending else None
    if not oldest:
        return 0.0
    now_ms = int(sec) * 1000 + int(usec) // 1000
    return max(0.0, (now_ms - int(str(oldest).split("-", 1)[0])) / 1000)


async def probe_dependency(name: str, probe: Any, timeout: float) -> bool:
    """Await `probe` (a ping) within `timeout`; record and return whether it answered."""
    ok = True
    try:
        await asyncio.wait_for(probe, timeout)
    except Exception:
        ok = False
    DEPENDENCY_UP.labels(dependency=name).set(1 if ok else 0)
    return ok


async def refresh_queue_gauges_quietly(queue: Queue, timeout: float) -> None:
    """`refresh_queue_gauges` for every priority, bounded, ignoring Redis trouble."""
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(refresh_queue_gauges(queue), timeout)
