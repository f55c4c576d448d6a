"""Settings from environment variables, with safe defaults for local runs.

Every variable is listed in the README's settings table; keep the two in step.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from relayq.core.env import SettingsError as SettingsError  # re-exported: raised by from_env
from relayq.core.env import number
from relayq.core.priorities import DEFAULT_CLASSES, Priority, PriorityClass


@dataclass(frozen=True)
class Settings:
    """Configuration shared by every relayq process.

    Attributes:
        redis_url: Redis used for dispatch (`RELAYQ_REDIS_URL`); with sentinels, only
            its database number applies.
        redis_sentinels: Sentinel addresses; when given, the master is found
            through them (`RELAYQ_REDIS_SENTINELS`, `host:port,host:port`).
        redis_sentinel_master: the master's name in Sentinel (`RELAYQ_REDIS_SENTINEL_MASTER`).
        redis_password: password of the Redis servers (`RELAYQ_REDIS_PASSWORD`).
        redis_sentinel_password: password of the Sentinels (`RELAYQ_REDIS_SENTINEL_PASSWORD`).
        key_prefix: first part of every Redis key (`RELAYQ_KEY_PREFIX`).
        mongo_url: MongoDB holding task records (`RELAYQ_MONGO_URL`).
        mongo_database: database name (`RELAYQ_MONGO_DATABASE`).
        mongo_tls_ca_file: CA certificate (PEM) the MongoDB servers' certificates
            must chain to; set, every connection uses TLS (`RELAYQ_MONGO_TLS_CA_FILE`).
        mongo_tls_certificate_key_file: this client's certificate and key in one
            PEM file, for servers that require one (`RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE`).
        mongo_timeout_seconds: the bound of every MongoDB operation, retries included
            (`RELAYQ_MONGO_TIMEOUT_SECONDS`); index builds get longer.
        redis_timeout_seconds: the bound of every Redis read or write on a connection
            (`RELAYQ_REDIS_TIMEOUT_SECONDS`); a lost peer is noticed after it.
        lease_seconds: a claim idle this long is taken back (`RELAYQ_LEASE_SECONDS`).
        max_deliveries: deliveries after which a job is poison (`RELAYQ_MAX_DELIVERIES`).
        drain_seconds: SIGTERM waits this long for in-flight jobs (`RELAYQ_DRAIN_SECONDS`).
        metrics_port: worker Prometheus port, 0 for none (`RELAYQ_METRICS_PORT`).
        log_level: logging level name (`RELAYQ_LOG_LEVEL`).
        worker_id: this process's consumer name (`RELAYQ_WORKER_ID`).
        job_modules: modules whose `JOB_TYPES` join the registry (`RELAYQ_JOB_MODULES`).
        store_batch_max: most task writes in one batched store write; 1 writes
            each alone (`RELAYQ_STORE_BATCH_MAX`).
        store_batch_window_ms: how long a submission's insert waits for others
            to share its commit (`RELAYQ_STORE_BATCH_WINDOW_MS`, 0 to 2).
        classes: the priority classes, each overridable by `RELAYQ_<PRIORITY>_<FIELD>`.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_password: str | None = field(default=None, repr=False)
    redis_sentinel_password: str | None = field(default=None, repr=False)
    key_prefix: str = "relayq"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_database: str = "relayq"
    mongo_tls_ca_file: str | None = None
    mongo_tls_certificate_key_file: str | None = None
    mongo_timeout_seconds: float = 10.0
    redis_timeout_seconds: float = 10.0
    lease_seconds: float = 30.0
    max_deliveries: int = 5
    drain_seconds: float = 25.0
    metrics_port: int = 9100
    log_level: str = "INFO"
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    job_modules: tuple[str, ...] = ()
    store_batch_max: int = 256
    store_batch_window_ms: float = 1.0
    classes: Mapping[Priority, PriorityClass] = field(default_factory=lambda: DEFAULT_CLASSES)

    def priority_class(self, priority: Priority) -> PriorityClass:
        return self.classes[priority]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `environ` (default: os.environ); SettingsError on a bad value."""
        env = os.environ if environ is None else environ
        defaults = cls()
        classes = {p: _class_from_env(env, c) for p, c in defaults.classes.items()}
        settings = cls(
            redis_url=env.get("RELAYQ_REDIS_URL", defaults.redis_url),
            redis_sentinels=parse_sentinels(env.get("RELAYQ_REDIS_SENTINELS", "")),
            redis_sentinel_master=env.get(
                "RELAYQ_REDIS_SENTINEL_MASTER", defaults.redis_sentinel_master
            ).strip(),
            redis_password=env.get("RELAYQ_REDIS_PASSWORD") or None,
            redis_sentinel_password=env.get("RELAYQ_REDIS_SENTINEL_PASSWORD") or None,
            key_prefix=env.get("RELAYQ_KEY_PREFIX", defaults.key_prefix),
            mongo_url=env.get("RELAYQ_MONGO_URL", defaults.mongo_url),
            mongo_database=env.get("RELAYQ_MONGO_DATABASE", defaults.mongo_database),
            mongo_tls_ca_file=_readable_file(env, "RELAYQ_MONGO_TLS_CA_FILE"),
            mongo_tls_certificate_key_file=_readable_file(
                env, "RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE"
            ),
            mongo_timeout_seconds=number(
                env, "RELAYQ_MONGO_TIMEOUT_SECONDS", defaults.mongo_timeout_seconds, 0.1
            ),
            redis_timeout_seconds=number(
                env, "RELAYQ_REDIS_TIMEOUT_SECONDS", defaults.redis_timeout_seconds, 0.1
            ),
            lease_seconds=number(env, "RELAYQ_LEASE_SECONDS", defaults.lease_seconds, 0.5),
            max_deliveries=int(number(env, "RELAYQ_MAX_DELIVERIES", defaults.max_deliveries, 1)),
            drain_seconds=number(env, "RELAYQ_DRAIN_SECONDS", defaults.drain_seconds, 0),
            metrics_port=int(number(env, "RELAYQ_METRICS_PORT", defaults.metrics_port, 0)),
            log_level=env.get("RELAYQ_LOG_LEVEL", defaults.log_level).upper(),
            worker_id=env.get("RELAYQ_WORKER_ID", defaults.worker_id),
            job_modules=tuple(
                m.strip() for m in env.get("RELAYQ_JOB_MODULES", "").split(",") if m.strip()
            ),
            store_batch_max=int(number(env, "RELAYQ_STORE_BATCH_MAX", defaults.store_batch_max, 1)),
            store_batch_window_ms=number(
                env, "RELAYQ_STORE_BATCH_WINDOW_MS", defaults.store_batch_window_ms, 0, 2
            ),
            classes=classes,
        )
        if not settings.key_prefix or "{" in settings.key_prefix or "}" in settings.key_prefix:
            raise SettingsError("RELAYQ_KEY_PREFIX must be non-empty and hold no braces")
        if not settings.redis_sentinel_master:
            raise SettingsError("RELAYQ_REDIS_SENTINEL_MASTER must not be empty")
        if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError("RELAYQ_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return settings


def parse_sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 hosts in brackets) as (host, port) pairs; SettingsError
    (a ValueError) names a malformed one. Empty text gives no pairs."""
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SettingsError(
                f"RELAYQ_REDIS_SENTINELS: {item!r} is not host:port with a port of 1 to 65535"
            )
        out.append((host, int(port)))
    return tuple(out)


def _readable_file(env: Mapping[str, str], name: str) -> str | None:
    """A path that names a readable file, or None when the variable is unset or empty.

    Checked here so a wrong mount fails at start with the variable's name, not
    at the first connection with an SSL error."""
    path = env.get(name, "").strip()
    if not path:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise SettingsError(f"{name}={path!r} is not a readable file")
    return path


def _class_from_env(env: Mapping[str, str], base: PriorityClass) -> PriorityClass:
    prefix = f"RELAYQ_{base.priority.value.upper()}_"
    sla = base.sla_seconds
    if env.get(prefix + "SLA_SECONDS"):
        sla = number(env, prefix + "SLA_SECONDS", 0, 0.001)
    return replace(
        base,
        sla_seconds=sla,
        concurrency=int(number(env, prefix + "CONCURRENCY", base.concurrency, 1)),
        max_attempts=int(number(env, prefix + "MAX_ATTEMPTS", base.max_attempts, 1)),
        backoff_base_seconds=number(
            env, prefix + "BACKOFF_SECONDS", base.backoff_base_seconds, 0.001
        ),
        backoff_max_seconds=number(
            env, prefix + "BACKOFF_MAX_SECONDS", base.backoff_max_seconds, 0.001
        ),
    )
