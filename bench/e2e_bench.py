"""End to end: jobs POSTed over HTTP to a running `relayq-dev localstack` until completed.

The stack (Redis, the local MongoDB with `--sync-on-commit`, the API, one
worker process per priority, a devchain) runs as its own processes on free
ports; this process is the load generator, keeping `in_flight` requests open.
`per_s` is jobs over the time from the first request to the last record's
`finished_at`; `p99_wait_ms` is the 99th percentile of the records' queue
wait (`started_at - queued_at`). The generator's CPU share is reported beside.

    python -m bench.e2e_bench --jobs 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from pymongo import AsyncMongoClient

from relayq.dev.servers import REPO_ROOT, free_port, wait_for_port

PRIORITY = "high"
DATABASE = "bench_e2e"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _post_all(url: str, key: str, jobs: int, in_flight: int) -> int:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({"type": "noop", "priority": PRIORITY}).encode()
    accepted = 0
    next_job = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:

        async def sender() -> None:
            nonlocal accepted, next_job
            while next_job < jobs:
                next_job += 1
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    accepted += resp.status == 202

        await asyncio.gather(*(sender() for _ in range(in_flight)))
    return accepted


async def _measure(api: str, key: str, mongo_url: str, jobs: int, in_flight: int) -> dict[str, Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        tasks = mongo[DATABASE]["tasks"]
        await tasks.delete_many({})
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        first_sent = time.time()
        t0 = time.perf_counter()
        accepted = await _post_all(f"{api}/v1/jobs", key, jobs, in_flight)
        post_s = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        deadline = time.monotonic() + 600
        while await tasks.count_documents({"state": "completed"}) < accepted:
            if time.monotonic() > deadline:
                raise RuntimeError("jobs did not complete within 10 minutes")
            await asyncio.sleep(0.2)
        docs = await tasks.find(
            {"state": "completed"}, {"queued_at": 1, "started_at": 1, "finished_at": 1}
        ).to_list()
    finally:
        await mongo.close()
    last = max(d["finished_at"].timestamp() for d in docs)
    waits = [(d["started_at"] - d["queued_at"]).total_seconds() * 1000 for d in docs]
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "jobs": accepted,
        "per_s": accepted / (last - first_sent),
        "p99_wait_ms": _percentile(waits, 0.99),
        "p50_wait_ms": _percentile(waits, 0.50),
        "post_per_s": accepted / post_s,
        "in_flight": in_flight,
        "load_generator_cpu_share": cpu / post_s,
    }


def measure_e2e(jobs: int, in_flight: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    """Start localstack on free ports, run the load, stop it; the e2e figures."""
    key = secrets.token_urlsafe(16)
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
    env.update(
        RELAYQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        RELAYQ_MONGO_URL=f"mongodb://127.0.0.1:{free_port()}/",
        RELAYQ_MONGO_DATABASE=DATABASE,
        RELAYQ_API_KEY=key,
        RELAYQ_API_PORT=str(api_port),
        RELAYQ_API_RATE_LIMIT=str(10**6),
        RELAYQ_API_SOURCE_RATE_LIMIT=str(10**7),
        RELAYQ_DEVCHAIN_PORT=str(free_port()),
        RELAYQ_LOG_LEVEL="WARNING",
        RELAYQ_HIGH_CONCURRENCY=str(concurrency),
    )
    log = (workdir / "localstack.log").open("wb")
    stack = subprocess.Popen(
        [sys.executable, "-m", "relayq.dev", "localstack", "--data-dir", str(workdir / "data"),
         "--metrics-base-port", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        wait_for_port(api_port, stack, 180)
        time.sleep(2)  # the workers start after the API
        result = asyncio.run(
            _measure(f"http://127.0.0.1:{api_port}", key, env["RELAYQ_MONGO_URL"], jobs, in_flight)
        )
        result["worker_concurrency"] = concurrency
        return result
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e_bench")
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50, help="the high worker's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relayq-e2e-") as tmp:
        print(json.dumps(measure_e2e(args.jobs, args.in_flight, args.concurrency, Path(tmp))))


if __name__ == "__main__":
    main()
