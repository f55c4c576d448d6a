"""The operator process as the chart runs it: its arguments and environment, its
RBAC rules, its Redis Secret and WorkerAutoscalers, against Sentinels that
require the chart's password and, with redis.tls.enabled, serve TLS only
(KWOK runs no containers, so the chart install test cannot show that
autoscaling works)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from relayq.dev.servers import REPO_ROOT, free_port, stop_process
from tests.chaos.redis_group import RedisGroup
from tests.chart.render import RELEASE, Render, template
from tests.kube.cluster import KubeCluster
from tests.kube.pki import ClusterPki, make_pki
from tests.operator.kubeobjects import (
    GROUP,
    OPERATOR_SA,
    PLURAL,
    VERSION,
    autoscaler_status,
    condition,
    create_deployment,
    grant_operator,
    wait_for,
)

pytestmark = pytest.mark.slow

OPERATOR_BIN = Path(sys.executable).parent / "relayq-operator"


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def tls(request: pytest.FixtureRequest, tmp_path: Path) -> ClusterPki | None:
    """None, or the CA and certificate of a TLS-only group (redis.tls.enabled)."""
    return make_pki(tmp_path / "pki", "10.0.0.1") if request.param else None


@pytest.fixture
def chart(tmp_path: Path, namespace: str, tls: ClusterPki | None) -> Render:
    """The default values, released into the test's namespace."""
    return template(
        tmp_path / "helm",
        [REPO_ROOT / "deploy/helm/relayq/ci/01-default-values.yaml"],
        sets={"redis.tls.enabled": "true"} if tls else None,
        extra=["--namespace", namespace],
    )


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.fixture
def sentinels(tmp_path: Path, chart: Render, tls: ClusterPki | None) -> Iterator[RedisGroup]:
    """A master, a replica and three Sentinels with the chart's password and master name."""
    redis_secret = chart.get("Secret", f"{RELEASE}-redis")
    assert redis_secret is not None
    password = secret_values(redis_secret)["redis-password"]
    group = RedisGroup(
        tmp_path / "redis",
        password=password,
        # The chart's Sentinels require the Redis password too (sentinel.sh: requirepass).
        sentinel_password=password,
        master_name=chart.values["redis"]["sentinel"]["masterName"],
        tls=tls,
    ).start()
    yield group
    group.stop()


def operator_mount(chart: Render, volume: str) -> str:
    deployment = chart.get("Deployment", f"{RELEASE}-operator")
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    return str(mount["mountPath"])


def operator_command(chart: Render, kubeconfig: Path) -> tuple[list[str], dict[str, str]]:
    """The chart's operator container as a local process: its args and env, free ports."""
    deployment = chart.get("Deployment", f"{RELEASE}-operator")
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = []
    for arg in container.get("args", []):
        flag, _, value = arg.partition("=")
        if flag == "--metrics-port":
            value = str(free_port())
        elif flag == "--liveness":
            value = f"http://127.0.0.1:{free_port()}/healthz"
        args.append(f"{flag}={value}")
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return [str(OPERATOR_BIN), *args, f"--kubeconfig={kubeconfig}"], env


def test_operator_with_the_chart_settings_reaches_sentinels_with_passwords(
    kube_cluster: KubeCluster,
    admin: client.ApiClient,
    namespace: str,
    chart: Render,
    sentinels: RedisGroup,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(admin)
    # The chart's Redis Secret as rendered; only the Sentinels' addresses are the
    # local ones (the cluster's DNS names do not resolve here).
    redis_secret = chart.get("Secret", f"{RELEASE}-redis")
    assert redis_secret is not None
    data = secret_values(redis_secret)
    data["sentinels"] = sentinels.sentinels_env
    if sentinels.tls is not None:
        # With TLS the URL names the CA where the chart mounts it in the
        # operator's pod; here that file is the test CA.
        mount = operator_mount(chart, "redis-tls")
        assert f"ssl_ca_certs={mount}/ca.crt" in data["redis-url"]
        data["redis-url"] = data["redis-url"].replace(f"{mount}/ca.crt", str(sentinels.tls.ca_cert))
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": redis_secret["metadata"]["name"]}, "stringData": data},
    )
    # The chart's Role rules for the operator, exactly.
    (role,) = chart.of_kind("Role")
    grant_operator(admin, namespace, role["rules"])
    account = chart.get("ServiceAccount", f"{RELEASE}-operator")
    assert account is not None and account["metadata"]["name"] == OPERATOR_SA
    autoscalers = chart.of_kind("WorkerAutoscaler")
    assert len(autoscalers) == 5
    for wa in autoscalers:
        create_deployment(admin, namespace, wa["spec"]["scaleTargetRef"]["name"], 0)
        body = {**wa, "metadata": {**wa["metadata"], "namespace": namespace}}
        client.CustomObjectsApi(admin).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )

    # The operator's ServiceAccount in the test is the one the chart names.
    kubeconfig = kube_cluster.service_account_kubeconfig(namespace, account["metadata"]["name"])
    command, env = operator_command(chart, kubeconfig)
    assert env["RELAYQ_OPERATOR_NAMESPACE"] == namespace
    log = (tmp_path / "operator.log").open("wb")
    process = subprocess.Popen(
        command, env={"PATH": str(OPERATOR_BIN.parent), **env}, stdout=log, stderr=log
    )
    try:
        for wa in autoscalers:
            name = wa["metadata"]["name"]

            def ready(name: str = name) -> dict[str, Any]:
                assert process.poll() is None, (tmp_path / "operator.log").read_text()[-4000:]
                status = autoscaler_status(admin, namespace, name)
                return status if condition(status, "Ready").get("status") == "True" else {}

            status = wait_for(f"{name} Ready", ready, timeout=60)
            assert condition(status, "RedisReachable")["status"] == "True", status
            assert status["backlog"] == 0
    except AssertionError:
        print((tmp_path / "operator.log").read_text()[-6000:])
        raise
    finally:
        stop_process(process)
        log.close()
