"""Fixtures for the operator tests: the real API server, the CRD, a namespace per
test, the operator's ServiceAccount bound to the chart's RBAC rules, and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from redis import Redis as SyncRedis

from relayq.core.clients import connect_redis
from relayq.core.queue import Queue
from relayq.dev.servers import LocalServer
from relayq.operator.handlers import OperatorConfig, build_registry
from tests.operator.kubeobjects import (
    OPERATOR_SA,
    grant_operator,
    install_crd,
    rbac_rules,
    release_namespace,
)

if TYPE_CHECKING:
    from tests.kube.cluster import KubeCluster

RunOperator = Callable[..., AbstractContextManager[KopfRunner]]


@pytest.fixture(scope="module")
def admin(kube_cluster: KubeCluster) -> Iterator[client.ApiClient]:
    """An admin client of the test cluster, with the chart's CRD installed."""
    with kube_cluster.api_client() as api:
        install_crd(api)
        yield api


@pytest.fixture
def namespace(admin: client.ApiClient) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    yield name
    release_namespace(admin, name)


@pytest.fixture
def operator_kubeconfig(kube_cluster: KubeCluster, admin: client.ApiClient, namespace: str) -> Path:
    """A kubeconfig of a ServiceAccount holding exactly the rules of files/operator-rbac.yaml."""
    grant_operator(admin, namespace, rbac_rules())
    return kube_cluster.service_account_kubeconfig(namespace, OPERATOR_SA)


@pytest.fixture
def redis_url(redis_srv: LocalServer) -> str:
    if not redis_srv.running:
        redis_srv.start()
    SyncRedis(port=redis_srv.port).flushall()
    return f"redis://127.0.0.1:{redis_srv.port}/0"


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    redis = connect_redis(redis_url)
    yield Queue(redis)
    await redis.aclose()


@pytest.fixture
def run_operator(operator_kubeconfig: Path, namespace: str) -> Iterator[RunOperator]:
    """Run the operator in this process (kopf's KopfRunner), as the ServiceAccount."""
    outputs: list[str] = []

    @contextmanager
    def run(*extra: str) -> Iterator[KopfRunner]:
        config = OperatorConfig(kubeconfig=str(operator_kubeconfig), secret_refresh_seconds=1.0)
        args = ["run", "--standalone", "--verbose", "--namespace", namespace, *extra]
        runner = KopfRunner(args, registry=build_registry(config), timeout=60)
        try:
            with runner:
                yield runner
        finally:
            if runner.future.done() and runner.future.exception() is None:
                outputs.append(runner.output)
        assert runner.exit_code == 0, runner.output

    yield run
    # Shown by pytest only when the test failed.
    for output in outputs:
        print(f"--- operator output\n{output[-6000:]}")
