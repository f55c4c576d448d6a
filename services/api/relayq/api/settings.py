"""Settings of the HTTP gateway, from environment variables (see docs/api.md)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from relayq.core.env import SettingsError, integer, number
from relayq.core.owners import is_client_id


def hash_key(key: str) -> str:
    """How API keys are stored: SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiSettings:
    """Configuration of the gateway.

    Attributes:
        host, port: where it listens (`RELAYQ_API_HOST`, `RELAYQ_API_PORT`).
        metrics_port: where `/metrics` is served, on the same host and never on
            `port` (`RELAYQ_API_METRICS_PORT`); 0 for nowhere.
        api_keys: client key hashes to client ids, from `RELAYQ_API_KEY` (client
            `default`) and `RELAYQ_API_KEYS_FILE`; MongoDB's `api_keys` adds more.
        admin_token: the administrators' bearer token (`RELAYQ_ADMIN_TOKEN` or
            `RELAYQ_ADMIN_TOKEN_FILE`); None disables the admin routes (403).
        rate_limit_per_s: requests per second per client key (`RELAYQ_API_RATE_LIMIT`),
            shared by the replicas through Redis; fails open when Redis is down.
        source_rate_limit_per_s: requests per second per source address before
            authentication, per replica (`RELAYQ_API_SOURCE_RATE_LIMIT`).
        auth_failures_per_s, auth_failure_burst: failed authentications a source
            may make (`RELAYQ_API_AUTH_FAILURES_PER_S`, `RELAYQ_API_AUTH_FAILURE_BURST`);
            past them, credentials that are not already known get 429 unchecked.
        admin_rate_limit_per_s: admin requests per second, per replica
            (`RELAYQ_API_ADMIN_RATE_LIMIT`).
        key_cache_size: client keys remembered, and unknown keys apart, so that
            unknown keys never evict known ones (`RELAYQ_API_KEY_CACHE_SIZE`).
        source_header: a header a trusted proxy sets to the caller's address
            (`RELAYQ_API_SOURCE_HEADER`, e.g. X-Forwarded-For: its right-most entry).
        shutdown_seconds: SIGTERM waits this long for requests (`RELAYQ_API_SHUTDOWN_SECONDS`).
        mongo_timeout_seconds: how long a request waits for MongoDB before 503
            (`RELAYQ_API_MONGO_TIMEOUT_SECONDS`).
        redis_timeout_seconds: how long a request waits on a Redis connection
            (`RELAYQ_API_REDIS_TIMEOUT_SECONDS`); then 503, or a submission is
            recorded `pending`.
        max_body_bytes: larger bodies get 413.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    metrics_port: int = 9100
    api_keys: Mapping[str, str] = field(default_factory=dict)
    admin_token: str | None = None
    rate_limit_per_s: int = 200
    source_rate_limit_per_s: int = 5000
    auth_failures_per_s: float = 2.0
    auth_failure_burst: int = 20
    admin_rate_limit_per_s: int = 20
    key_cache_size: int = 10_000
    source_header: str | None = None
    shutdown_seconds: float = 10.0
    mongo_timeout_seconds: float = 2.0
    redis_timeout_seconds: float = 2.0
    max_body_bytes: int = 512 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if environ is None else environ
        keys: dict[str, str] = {}
        if env.get("RELAYQ_API_KEY"):
            keys[hash_key(env["RELAYQ_API_KEY"])] = "default"
        if env.get("RELAYQ_API_KEYS_FILE"):
            keys.update(read_keys_file(Path(env["RELAYQ_API_KEYS_FILE"])))
        admin = env.get("RELAYQ_ADMIN_TOKEN") or None
        if admin is None and env.get("RELAYQ_ADMIN_TOKEN_FILE"):
            admin = _read(Path(env["RELAYQ_ADMIN_TOKEN_FILE"])).strip() or None
        port = integer(env, "RELAYQ_API_PORT", cls.port, 1, 65535)
        metrics_port = integer(env, "RELAYQ_API_METRICS_PORT", cls.metrics_port, 0, 65535)
        check_metrics_port(port, metrics_port)
        return cls(
            host=env.get("RELAYQ_API_HOST", cls.host),
            port=port,
            metrics_port=metrics_port,
            api_keys=keys,
            admin_token=admin,
            rate_limit_per_s=integer(env, "RELAYQ_API_RATE_LIMIT", cls.rate_limit_per_s, 1, 10**6),
            source_rate_limit_per_s=integer(
                env, "RELAYQ_API_SOURCE_RATE_LIMIT", cls.source_rate_limit_per_s, 1, 10**7
            ),
            auth_failures_per_s=number(
                env, "RELAYQ_API_AUTH_FAILURES_PER_S", cls.auth_failures_per_s, 0.01
            ),
            auth_failure_burst=integer(
                env, "RELAYQ_API_AUTH_FAILURE_BURST", cls.auth_failure_burst, 1, 10**6
            ),
            admin_rate_limit_per_s=integer(
                env, "RELAYQ_API_ADMIN_RATE_LIMIT", cls.admin_rate_limit_per_s, 1, 10**6
            ),
            key_cache_size=integer(env, "RELAYQ_API_KEY_CACHE_SIZE", cls.key_cache_size, 1, 10**7),
            source_header=env.get("RELAYQ_API_SOURCE_HEADER") or None,
            mongo_timeout_seconds=number(
                env, "RELAYQ_API_MONGO_TIMEOUT_SECONDS", cls.mongo_timeout_seconds, 0.1
            ),
            redis_timeout_seconds=number(
                env, "RELAYQ_API_REDIS_TIMEOUT_SECONDS", cls.redis_timeout_seconds, 0.1
            ),
            shutdown_seconds=float(
                integer(env, "RELAYQ_API_SHUTDOWN_SECONDS", int(cls.shutdown_seconds), 0, 3600)
            ),
        )


def check_metrics_port(port: int, metrics_port: int) -> None:
    """The metrics are never served on the public port."""
    if not 0 <= metrics_port <= 65535:
        raise SettingsError(f"the metrics port must be between 0 and 65535, not {metrics_port}")
    if metrics_port == port:
        raise SettingsError(
            f"RELAYQ_API_METRICS_PORT must differ from RELAYQ_API_PORT ({port}): "
            "the metrics are not served on the public port"
        )


def read_keys_file(path: Path) -> dict[str, str]:
    """`client-id:sha256hex` per line; blank lines and `#` comments are skipped."""
    keys: dict[str, str] = {}
    for line_no, line in enumerate(_read(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        client, sep, digest = line.rpartition(":")
        digest, client = digest.strip().lower(), client.strip()
        if not sep or not client or len(digest) != 64 or not _is_hex(digest):
            raise SettingsError(f"{path}:{line_no}: expected client-id:sha256hex")
        if not is_client_id(client):
            raise SettingsError(
                f"{path}:{line_no}: client id {client!r}: letters, digits, '.', '_', '@', '-', "
                "starting with a letter or digit, at most 64"
            )
        keys[digest] = client
    return keys


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdef" for c in value)
