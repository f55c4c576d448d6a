"""BullMQ (Node) under the shared protocol, through bench/bullmq/bench.mjs.

The Node script does both phases itself (Queue.add, then one Worker) and prints
one JSON line; this wrapper runs it with `node` and returns what it printed.
Its dependencies come from `tools/install-bench.sh`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

from bench.competitors.common import PROCESS_TIMEOUT_S

BULLMQ_DIR = Path(__file__).resolve().parents[1] / "bullmq"
SCRIPT = BULLMQ_DIR / "bench.mjs"
LOOPBACK = {"127.0.0.1", "localhost"}


def _port(redis_url: str) -> int:
    """The port of a loopback Redis URL (bench.mjs connects to 127.0.0.1)."""
    url = urlparse(redis_url)
    if url.hostname not in LOOPBACK or url.password or (url.path not in ("", "/", "/0")):
        raise ValueError(f"bench.mjs needs redis://127.0.0.1:PORT, not {redis_url}")
    return url.port or 6379


async def measure(redis_url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """Run bench.mjs against the Redis at `redis_url`; jobs per second for each phase."""
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node not found on PATH")
    if not (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
        raise FileNotFoundError(f"{BULLMQ_DIR}/node_modules missing; run tools/install-bench.sh")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        str(_port(redis_url)),
        str(jobs),
        str(concurrency),
        cwd=BULLMQ_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROCESS_TIMEOUT_S * 2)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"bench.mjs exited with {proc.returncode}: {tail}")
    lines = out.decode().strip().splitlines()
    if not lines:
        raise RuntimeError("bench.mjs printed nothing")
    result = json.loads(lines[-1])
    return {
        "enqueue_per_s": float(result["enqueue_per_s"]),
        "process_per_s": float(result["process_per_s"]),
    }
