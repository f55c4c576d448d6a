"""Fixtures that start real servers on free loopback ports.

Redis and the local MongoDB (secantusd-rs) start once per session; each test
gets a flushed Redis database, a MongoDB database of its own, and settings
pointing at both. RELAYQ_TEST_MONGO_URL runs the tests against another MongoDB
(a real replica set, say) instead of starting one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from redis import Redis as SyncRedis

from relayq.core.clients import Clients, open_clients
from relayq.core.modules import ProcessContext
from relayq.core.settings import Settings
from relayq.dev.servers import REPO_ROOT, LocalServer, mongo_server, redis_server

if TYPE_CHECKING:
    from tests.kube.cluster import KubeCluster


@pytest.fixture(scope="session")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = redis_server(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


MONGO_URL_ENV = "RELAYQ_TEST_MONGO_URL"


@pytest.fixture(scope="session")
def mongo_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The local MongoDB this session started (tests that restart or kill it use this)."""
    server = mongo_server(tmp_path_factory.mktemp("mongo")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_url(request: pytest.FixtureRequest) -> str:
    """The MongoDB the tests write to: RELAYQ_TEST_MONGO_URL, or the local one."""
    if os.environ.get(MONGO_URL_ENV):
        return os.environ[MONGO_URL_ENV]
    server: LocalServer = request.getfixturevalue("mongo_srv")
    return f"mongodb://127.0.0.1:{server.port}/"


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK)."""
    # Imported here: the kubernetes client is slow to import for tests that never use it.
    from tests.kube.cluster import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("kube"))
    yield cluster
    cluster.stop()


@pytest.fixture
def settings(redis_srv: LocalServer, mongo_url: str) -> Settings:
    if not redis_srv.running:
        redis_srv.start()
    SyncRedis(port=redis_srv.port).flushall()
    return replace(
        Settings.from_env({}),
        redis_url=f"redis://127.0.0.1:{redis_srv.port}/0",
        mongo_url=mongo_url,
        mongo_database=f"t_{uuid.uuid4().hex[:12]}",
        lease_seconds=2.0,
        drain_seconds=5.0,
        metrics_port=0,
        job_modules=("tests.jobtypes",),
    )


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[Clients]:
    from tests import jobtypes

    jobtypes.configure(settings)
    async with open_clients(settings) as c:
        yield c
        await c.store.client.drop_database(settings.mongo_database)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
    env.update(
        RELAYQ_REDIS_URL=settings.redis_url,
        RELAYQ_MONGO_URL=settings.mongo_url,
        RELAYQ_MONGO_DATABASE=settings.mongo_database,
        RELAYQ_LEASE_SECONDS=str(settings.lease_seconds),
        RELAYQ_DRAIN_SECONDS=str(settings.drain_seconds),
        RELAYQ_MAX_DELIVERIES=str(settings.max_deliveries),
        RELAYQ_METRICS_PORT="0",
        RELAYQ_API_METRICS_PORT="0",
        RELAYQ_JOB_MODULES=",".join(settings.job_modules),
        PYTHONPATH=str(REPO_ROOT),
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A `relayq worker` child process, stopped by its pid."""

    def __init__(self, settings: Settings, priority: str, log_dir: Path, **env: str) -> None:
        self.log_path = log_dir / f"worker-{priority}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relayq.worker", "--priority", priority],
            env=settings_env(settings, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_started(self, timeout: float = 30.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"worker started" in self.log_path.read_bytes():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"worker did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(priority: str, wait: bool = True, **env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, priority, tmp_path, **env)
        started.append(worker)
        return worker.wait_started() if wait else worker

    yield start
    for worker in started:
        worker.kill()
        # Shown by pytest only when the test failed.
        print(
            f"--- {worker.log_path.name} (exit {worker.process.returncode})\n{worker.log()[-4000:]}"
        )


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll an async predicate until it returns something truthy; fail at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


class InProcessWorker:
    """A Worker running as a task of the test's event loop."""

    def __init__(
        self, clients: Clients, priority: str, process: ProcessContext | None = None, **config: Any
    ) -> None:
        from relayq.core.priorities import Priority
        from relayq.worker.executor import TaskExecutor
        from relayq.worker.runner import Worker, WorkerConfig

        s = clients.settings
        p = Priority(priority)
        self.executor = TaskExecutor(
            s, clients.service.registry, clients.service.lifecycle, clients.queue, process
        )
        cfg = WorkerConfig(
            priority=p,
            consumer=config.pop("consumer", f"test-{uuid.uuid4().hex[:6]}"),
            concurrency=config.pop("concurrency", s.priority_class(p).concurrency),
            lease_seconds=config.pop("lease_seconds", s.lease_seconds),
            max_deliveries=config.pop("max_deliveries", s.max_deliveries),
            drain_seconds=config.pop("drain_seconds", s.drain_seconds),
        )
        assert not config, f"unknown worker options {config}"
        self.worker = Worker(clients.queue, self.executor, cfg, poison_handler=self.executor.poison)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InProcessWorker:
        self.task = asyncio.create_task(self.worker.run())
        await asyncio.sleep(0)
        return self

    async def stop(self) -> None:
        self.worker.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 60)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
