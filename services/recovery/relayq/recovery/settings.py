"""Settings of the recovery job, from environment variables (README, "Recovery")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from relayq.core.env import flag, number


@dataclass(frozen=True)
class RecoverySettings:
    """How a recovery run behaves.

    Attributes:
        grace_seconds: only records unchanged this long are considered, so a
            submission or a worker in the middle of its two writes (MongoDB,
            then Redis) is never mistaken for a lost one
            (`RELAYQ_RECOVERY_GRACE_SECONDS`).
        retention_seconds: finished tasks older than this are deleted, or, with
            an idempotency key, stripped to a tombstone; 0 keeps them forever
            (`RELAYQ_RETENTION_SECONDS`).
        idempotency_window_seconds: how long a tombstone keeps an idempotency key
            answering with its original task, counted from the finish
            (`RELAYQ_IDEMPOTENCY_WINDOW_SECONDS`; never shorter than retention).
        lock_seconds: time to live of the run lock, renewed between steps
            (`RELAYQ_RECOVERY_LOCK_SECONDS`).
        max_tasks: lost tasks dispatched again per run; the rest wait for the
            next run (`RELAYQ_RECOVERY_MAX_TASKS`).
        max_deletes: tasks deleted per run by the bounded delete
            (`RELAYQ_RETENTION_MAX_DELETES`).
        ttl_index: expire finished tasks through a TTL index where the server
            accepts one (`RELAYQ_RETENTION_TTL_INDEX`, default on); off, every
            run deletes them itself, up to `max_deletes`.
        ttl_lag_seconds: how far past retention a task may outlive a TTL index
            before the run deletes it itself: the backstop for a server that
            accepts TTL indexes but never expires documents
            (`RELAYQ_RETENTION_TTL_LAG_SECONDS`).
        mongo_timeout_seconds: how long to wait for MongoDB before the run fails
            (`RELAYQ_RECOVERY_MONGO_TIMEOUT_SECONDS`).
    """

    grace_seconds: float = 30.0
    retention_seconds: float = 7 * 24 * 3600.0
    idempotency_window_seconds: float = 30 * 24 * 3600.0
    lock_seconds: float = 120.0
    max_tasks: int = 10_000
    max_deletes: int = 10_000
    ttl_index: bool = True
    ttl_lag_seconds: float = 3600.0
    mongo_timeout_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RecoverySettings:
        env = os.environ if environ is None else environ
        return cls(
            grace_seconds=number(env, "RELAYQ_RECOVERY_GRACE_SECONDS", cls.grace_seconds, 0),
            retention_seconds=number(env, "RELAYQ_RETENTION_SECONDS", cls.retention_seconds, 0),
            idempotency_window_seconds=number(
                env, "RELAYQ_IDEMPOTENCY_WINDOW_SECONDS", cls.idempotency_window_seconds, 0
            ),
            lock_seconds=number(env, "RELAYQ_RECOVERY_LOCK_SECONDS", cls.lock_seconds, 1),
            max_tasks=int(number(env, "RELAYQ_RECOVERY_MAX_TASKS", cls.max_tasks, 1)),
            max_deletes=int(number(env, "RELAYQ_RETENTION_MAX_DELETES", cls.max_deletes, 1)),
            ttl_index=flag(env, "RELAYQ_RETENTION_TTL_INDEX", cls.ttl_index),
            ttl_lag_seconds=number(env, "RELAYQ_RETENTION_TTL_LAG_SECONDS", cls.ttl_lag_seconds, 0),
            mongo_timeout_seconds=number(
                env, "RELAYQ_RECOVERY_MONGO_TIMEOUT_SECONDS", cls.mongo_timeout_seconds, 0.1
            ),
        )
