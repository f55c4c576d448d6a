"""The whole system on loopback for the chaos suite, and the faults it injects.

Redis (master, replica, three Sentinels), the local MongoDB, the API as a process, two
worker processes per priority and `relayq recovery --loop` (the CronJob's
stand-in). Every child is started here and stopped by its pid.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relayq.core.priorities import Priority
from relayq.core.settings import Settings
from relayq.dev.relayer_env import relayer_env
from relayq.dev.servers import (
    REPO_ROOT,
    LocalServer,
    devchain_server,
    free_port,
    mongo_server,
    wait_for_port,
)
from tests.chaos.redis_group import RedisGroup
from tests.conftest import WorkerProcess, settings_env

API_KEY = "chaos-client-key"
WORKERS_PER_PRIORITY = 2
# Short leases and a recovery grace of a few seconds make a crash cost seconds,
# not minutes; deliveries are allowed a little more slack than the default,
# since a store crash fails a few claims in a row through no fault of the job.
CHAOS_ENV = {
    "RELAYQ_LEASE_SECONDS": "3",
    "RELAYQ_MAX_DELIVERIES": "10",
    "RELAYQ_DRAIN_SECONDS": "2",
    "RELAYQ_RECOVERY_GRACE_SECONDS": "5",
    "RELAYQ_RECOVERY_LOCK_SECONDS": "120",
    "RELAYQ_LOG_LEVEL": "INFO",
}


@dataclass
class Events:
    """Faults injected, for the figures."""

    workers_killed: int = 0
    workers_started: int = 0
    forced_failovers: int = 0
    masters_killed: int = 0
    store_crashes: int = 0
    rpc_faults: int = 0
    log: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")


class ChaosStack:
    """Starts, breaks and stops the system under test."""

    def __init__(self, workdir: Path, base: Settings) -> None:
        self.workdir = workdir
        self.events = Events()
        self.rng = random.Random(7)
        self.group = RedisGroup(workdir / "redis")
        self.mongo: LocalServer = mongo_server(workdir / "mongo")
        # The local chain the purchases swap and transfer on; it is not a fault target.
        # Its RPC answers errors now and then while purchases poll it (rpc_faults).
        self.chain: LocalServer = devchain_server(
            workdir / "devchain", slot_ms=200, jito_rate_limit=0, faults=True
        )
        self.chain_env: dict[str, str] = {}
        self.api_port = free_port()
        self.settings = replace(
            base,
            redis_url="redis://127.0.0.1:1/0",
            mongo_url=f"mongodb://127.0.0.1:{self.mongo.port}/",
            mongo_database="chaos",
            lease_seconds=float(CHAOS_ENV["RELAYQ_LEASE_SECONDS"]),
            max_deliveries=int(CHAOS_ENV["RELAYQ_MAX_DELIVERIES"]),
            drain_seconds=float(CHAOS_ENV["RELAYQ_DRAIN_SECONDS"]),
            job_modules=("tests.jobtypes", "relayq.relayer.jobs"),
        )
        self.workers: dict[Priority, list[WorkerProcess]] = {p: [] for p in Priority}
        self.retired: list[WorkerProcess] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.recovery: subprocess.Popen[bytes] | None = None

    # -- start and stop --------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            **CHAOS_ENV,
            **self.chain_env,
            "RELAYQ_REDIS_SENTINELS": self.group.sentinels_env,
            **extra,
        }
        return settings_env(self.settings, **values)

    def start(self) -> ChaosStack:
        self.group.start()
        self.mongo.start()
        self.chain.start()
        self.chain_env = {
            **relayer_env(self.workdir / "devchain" / "chain.json"),
            "RELAYQ_JITO_RPS": "1000",
        }
        self.settings = replace(self.settings, redis_sentinels=self.group.addresses)
        api_log = (self.workdir / "api.log").open("wb")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "relayq.api"],
            env=self.env(
                RELAYQ_API_PORT=str(self.api_port),
                RELAYQ_API_KEY=API_KEY,
                RELAYQ_API_RATE_LIMIT="100000",
                RELAYQ_API_SOURCE_RATE_LIMIT="1000000",
                RELAYQ_API_ADMIN_RATE_LIMIT="100000",
            ),
            cwd=REPO_ROOT,
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
        for priority in Priority:
            for _ in range(WORKERS_PER_PRIORITY):
                self._start_worker(priority, wait=False)
        # Eleven interpreters start at once: generous bounds for a loaded machine.
        for worker in self._all_workers():
            worker.wait_started(240)
        wait_for_port(self.api_port, self.api, 240)
        recovery_log = (self.workdir / "recovery.log").open("wb")
        self.recovery_out = self.workdir / "recovery.jsonl"
        self.recovery = subprocess.Popen(
            [sys.executable, "-m", "relayq.cli", "recovery", "--loop", "5"],
            env=self.env(),
            cwd=REPO_ROOT,
            stdout=self.recovery_out.open("wb"),
            stderr=recovery_log,
        )
        return self

    def stop(self) -> None:
        for proc in (self.recovery, self.api):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for worker in self._all_workers():
            worker.kill()
        self.group.stop()
        self.mongo.stop()
        self.chain.stop()

    def _all_workers(self) -> list[WorkerProcess]:
        return [w for ws in self.workers.values() for w in ws]

    def _start_worker(self, priority: Priority, wait: bool = True) -> WorkerProcess:
        worker = WorkerProcess(
            self.settings,
            priority.value,
            self.workdir,
            **{k: v for k, v in self.env().items() if k.startswith("RELAYQ_REDIS_SENTINEL")},
            **CHAOS_ENV,
            **self.chain_env,
            RELAYQ_WORKER_ID=f"{priority.value}-{uuid.uuid4().hex[:6]}",
        )
        self.workers[priority].append(worker)
        self.events.workers_started += 1
        return worker.wait_started(90) if wait else worker

    # -- faults ------------------------------------------------------------------

    def kill_random_worker(self) -> None:
        """SIGKILL one worker (mid-job, likely) and start a replacement for its priority."""
        priority = self.rng.choice(list(Priority))
        victims = [w for w in self.workers[priority] if w.process.poll() is None]
        if not victims:
            return
        victim = self.rng.choice(victims)
        victim.kill()
        self.workers[priority].remove(victim)
        self.retired.append(victim)
        self.events.workers_killed += 1
        self.events.note(f"SIGKILL worker {priority.value} pid {victim.process.pid}")
        self._start_worker(priority, wait=False)

    def forced_failover(self) -> None:
        self.group.wait_ready(60)
        old, new = self.group.failover(60)
        self.events.forced_failovers += 1
        self.events.note(f"SENTINEL FAILOVER {old} -> {new}")

    def kill_master(self) -> None:
        self.group.wait_ready(60)
        old, new = self.group.kill_master(60)
        self.events.masters_killed += 1
        self.events.note(f"SIGKILL master {old}; {new} promoted")
        # Back as a replica only after the promotion: an empty master would wipe the data.
        self.group.restart_stopped()

    def crash_store(self, down_seconds: float = 2.0) -> None:
        """SIGKILL the MongoDB server mid-traffic; what it acknowledged must survive."""
        self.mongo.kill()
        time.sleep(down_seconds)
        self.mongo.start()
        self.events.store_crashes += 1
        self.events.note(f"MongoDB SIGKILLed, back after {down_seconds}s down")

    def rpc_faults(self) -> None:
        """The chain's RPC misbehaves while purchases poll it: JSON-RPC errors (a node
        behind, -32005), as HTTP 503 or inside an HTTP 200. None of these is a verdict:
        every purchase must still complete, none parked."""
        status = self.rng.choice([200, 503])
        body = {
            "rpcErrors": self.rng.randint(3, 8),
            "methods": ["getSignatureStatuses", "getBlockHeight", "getEpochInfo"],
            "rpcErrorStatus": status,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.chain.port}/devchain/faults",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
        self.events.rpc_faults += 1
        self.events.note(f"RPC errors x{body['rpcErrors']} (HTTP {status}) while polling")

    # -- what the processes said ---------------------------------------------------

    def worker_logs(self) -> list[dict[str, Any]]:
        lines = []
        for worker in [*self._all_workers(), *self.retired]:
            for raw in worker.log_path.read_text(errors="replace").splitlines():
                if raw.startswith("{"):
                    try:
                        lines.append(json.loads(raw))
                    except json.JSONDecodeError:
                        continue
        return lines

    def recovery_summaries(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.recovery_out.read_text().splitlines():
            if raw.startswith("{"):
                out.append(json.loads(raw))
        return out

    def stop_recovery_loop(self) -> None:
        if self.recovery is not None and self.recovery.poll() is None:
            self.recovery.terminate()
            self.recovery.wait(30)

    def reconcile_once(self) -> dict[str, Any]:
        """One `relayq reconcile` over the whole run (every purchase, however young)."""
        proc = subprocess.run(
            [sys.executable, "-m", "relayq.cli", "reconcile", "--window", "3600", "--settle", "0"],
            env=self.env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        report: dict[str, Any] = json.loads(proc.stdout)
        report["exitCode"] = proc.returncode
        return report

    def recovery_once(self) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "relayq.cli", "recovery"],
            env=self.env(RELAYQ_RECOVERY_GRACE_SECONDS="1"),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        summary: dict[str, Any] = json.loads(proc.stdout)
        summary["exitCode"] = proc.returncode
        return summary
