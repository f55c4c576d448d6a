"""The five priority classes and their service levels."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Priority(StrEnum):
    """A priority class. Each has its own Redis keys, workers and autoscaling."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    BATCH = "batch"

    @classmethod
    def parse(cls, value: str) -> Priority:
        """The priority named `value` (case-insensitive), or ValueError naming the choices."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown priority {value!r}; expected one of {choices}") from None


@dataclass(frozen=True)
class PriorityClass:
    """Service level and execution limits of one priority.

    Attributes:
        priority: which class this is.
        sla_seconds: target time from enqueue to start; None for background work.
        concurrency: jobs one worker process runs at once.
        max_attempts: runs before a job is dead-lettered (1 = no retry).
        backoff_base_seconds: delay before the first retry; doubles with each attempt.
        backoff_max_seconds: ceiling of the retry delay.
    """

    priority: Priority
    sla_seconds: float | None
    concurrency: int
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float = 300.0


DEFAULT_CLASSES: dict[Priority, PriorityClass] = {
    Priority.CRITICAL: PriorityClass(Priority.CRITICAL, 1.0, 20, 5, 2.0),
    Priority.HIGH: PriorityClass(Priority.HIGH, 5.0, 10, 3, 2.0),
    Priority.MEDIUM: PriorityClass(Priority.MEDIUM, 30.0, 5, 2, 2.0),
    Priority.LOW: PriorityClass(Priority.LOW, 300.0, 2, 1, 2.0),
    Priority.BATCH: PriorityClass(Priority.BATCH, None, 1, 1, 2.0),
}
