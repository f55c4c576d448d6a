"""POST /v1/jobs under fixed request rates, from a load generator on loopback.

The gateway runs as its own process (`python -m relayq.api`) against the
benchmark's Redis and MongoDB. The load generator runs in a fresh process of
its own for each rate (`python -m bench.api_bench URL KEY RATE SECONDS`, one
JSON line out), so that nothing the benchmark did before (a heap of finished
engine runs and its garbage collections) stalls it and shows as latency. It is
open-loop: it sends each request at its scheduled time whatever the earlier
ones are doing, so a slow server shows up as latency, not as a lower offered
rate. Every request writes a task record and enqueues the job.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from relayq.dev.servers import REPO_ROOT, free_port, wait_for_port

REQUEST_TIMEOUT_S = 10.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _step(url: str, key: str, rate: int, seconds: float) -> dict[str, float]:
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = b'{"type": "noop", "priority": "batch"}'
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal errors
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 202:
                        errors += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            latencies.append((time.perf_counter() - sent) * 1000)

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "rate_per_s": float(rate),
        "achieved_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "errors": float(errors),
        # Of one core: the generator shares the machine's cores with the gateway.
        "load_generator_cpu_share": cpu / elapsed,
    }


def measure_api(
    redis_url: str, mongo_url: str, rates: list[int], seconds: float, workdir: Path
) -> list[dict[str, float]]:
    """One step per rate, lowest first; the gateway is restarted for none of them."""
    port = free_port()
    key = secrets.token_urlsafe(16)
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
    env.update(
        RELAYQ_REDIS_URL=redis_url,
        RELAYQ_MONGO_URL=mongo_url,
        RELAYQ_MONGO_DATABASE="bench_api",
        RELAYQ_API_KEY=key,
        RELAYQ_API_PORT=str(port),
        RELAYQ_API_RATE_LIMIT=str(10**6),
        RELAYQ_API_SOURCE_RATE_LIMIT=str(10**7),
        RELAYQ_LOG_LEVEL="WARNING",
    )
    log = (workdir / "api.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "relayq.api"], env=env, stdout=log, stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        wait_for_port(port, server, 60)
        url = f"http://127.0.0.1:{port}/v1/jobs"
        return [_generate(url, key, rate, seconds) for rate in sorted(rates)]
    finally:
        server.terminate()
        server.wait(30)


def _generate(url: str, key: str, rate: int, seconds: float) -> dict[str, float]:
    """One step, from a load generator process of its own."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.api_bench", url, key, str(rate), str(seconds)],
        check=True, capture_output=True, cwd=REPO_ROOT, timeout=seconds + 4 * REQUEST_TIMEOUT_S,
    )  # fmt: skip
    return dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def main(argv: list[str]) -> None:
    url, key, rate, seconds = argv
    print(json.dumps(asyncio.run(_step(url, key, int(rate), float(seconds)))))


if __name__ == "__main__":
    main(sys.argv[1:])
