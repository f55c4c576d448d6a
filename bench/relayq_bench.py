"""relayq under the shared protocol (bench.competitors.common).

Placeholder until the relayq side is written: both coroutines raise
NotImplementedError, which bench.run reports as an error row.
"""

from __future__ import annotations


async def measure_engine(redis_url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """relayq's queue and worker on Redis alone: enqueue_per_s and process_per_s."""
    raise NotImplementedError("bench.relayq_bench.measure_engine is not written yet")


async def measure_with_store(
    redis_url: str, mongo_url: str, jobs: int, concurrency: int
) -> dict[str, float]:
    """relayq with its MongoDB task store as well: enqueue_per_s and process_per_s."""
    raise NotImplementedError("bench.relayq_bench.measure_with_store is not written yet")
