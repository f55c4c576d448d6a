"""The test control plane behaves like a cluster: controllers, scheduler, KWOK, RBAC."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client

from relayq.dev.servers import REPO_ROOT
from tests.kube.cluster import (
    BINARIES,
    KubeCluster,
    KubeClusterError,
    control_plane_binaries,
)

T = TypeVar("T")
# KWOK runs no containers: the image is never pulled.
IMAGE = "relayq/none:test"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll probe until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last value {value!r})")
        time.sleep(0.1)


def meta(obj: object) -> client.V1ObjectMeta:
    metadata = getattr(obj, "metadata", None)
    assert isinstance(metadata, client.V1ObjectMeta), obj
    return metadata


def condition_true(status: object, kind: str) -> bool:
    conditions = getattr(status, "conditions", None) or []
    return any(c.type == kind and c.status == "True" for c in conditions)


@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster) -> Iterator[client.ApiClient]:
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=IMAGE)]),
            ),
        ),
    )


def running_ready_pods(api: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if meta(p).deletion_timestamp is None
        and p.status is not None
        and p.status.phase == "Running"
        and condition_true(p.status, "Ready")
    ]


def test_deployment_gets_replicaset_and_running_ready_pods(
    kube_cluster: KubeCluster, api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("web", 3))

    replica_sets = wait_for(
        "a ReplicaSet owned by the Deployment",
        lambda: apps.list_namespaced_replica_set(namespace, label_selector="app=web").items,
    )
    assert [o.kind for o in meta(replica_sets[0]).owner_references or []] == ["Deployment"]

    def three_ready() -> list[client.V1Pod] | None:
        pods = running_ready_pods(api, namespace, "web")
        return pods if len(pods) == 3 else None

    pods = wait_for("3 pods Running and Ready", three_ready)
    assert {p.spec.node_name for p in pods if p.spec} <= set(kube_cluster.node_names)
    assert all(p.status and p.status.pod_ip for p in pods)
    owners = {o.name for p in pods for o in meta(p).owner_references or []}
    assert owners == {meta(replica_sets[0]).name}

    def available() -> client.V1DeploymentStatus | None:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        if condition_true(status, "Available") and status and status.available_replicas == 3:
            return status
        return None

    assert wait_for("the Deployment Available", available).ready_replicas == 3


def test_scale_subresource_scales_up_and_down_to_zero(
    api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("scaled", 1))
    wait_for("1 pod", lambda: len(running_ready_pods(api, namespace, "scaled")) == 1)

    for replicas in (5, 0):
        apps.patch_namespaced_deployment_scale(
            "scaled", namespace, {"spec": {"replicas": replicas}}
        )
        spec = apps.read_namespaced_deployment_scale("scaled", namespace).spec
        # replicas 0 is left out of the JSON (omitempty): None here.
        assert spec is not None and (spec.replicas or 0) == replicas

        def pods_ready(n: int = replicas) -> bool:
            return len(running_ready_pods(api, namespace, "scaled")) == n

        wait_for(f"{replicas} pods Running and Ready", pods_ready)

    def no_pods() -> bool:
        core = client.CoreV1Api(api)
        return not core.list_namespaced_pod(namespace, label_selector="app=scaled").items

    # At zero the pods are gone, not only terminating: KWOK finishes their deletion.
    wait_for("no pods left", no_pods)


def test_service_account_token_gets_only_what_rbac_grants(
    kube_cluster: KubeCluster, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    kubeconfig = kube_cluster.service_account_kubeconfig(
        namespace, "reader", tmp_path / "reader.kubeconfig"
    )

    with kube_cluster.api_client(kubeconfig) as sa_api:
        sa_core = client.CoreV1Api(sa_api)
        with pytest.raises(client.ApiException) as refused:
            sa_core.list_namespaced_pod(namespace)
        assert refused.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(refused.value.body)

        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                rules=[
                    client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="reader-reads-pods"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                ],
            ),
        )

        def allowed() -> bool:
            try:
                sa_core.list_namespaced_pod(namespace)
            except client.ApiException as e:
                assert e.status == 403
                return False
            return True

        # The authorizer reads Roles from an informer: allow for its lag.
        wait_for("pods listable after the RoleBinding", allowed, timeout=10)
        # The grant stops at the Role's verbs, resources and namespace.
        forbidden: list[Callable[[], object]] = [
            lambda: sa_core.delete_collection_namespaced_pod(namespace),
            lambda: sa_core.list_namespaced_secret(namespace),
            lambda: sa_core.list_namespaced_pod("default"),
        ]
        for call in forbidden:
            with pytest.raises(client.ApiException) as still_refused:
                call()
            assert still_refused.value.status == 403


def test_job_created_from_cronjob_template_runs_and_is_collected_with_it(
    api: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(api)
    template = client.V1JobTemplateSpec(
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image=IMAGE)],
                )
            ),
        )
    )
    cron = batch.create_namespaced_cron_job(
        namespace,
        client.V1CronJob(
            metadata=client.V1ObjectMeta(name="nightly"),
            spec=client.V1CronJobSpec(schedule="0 3 * * *", job_template=template),
        ),
    )
    assert cron.spec is not None
    # What `kubectl create job --from=cronjob/nightly` does: the CronJob's
    # job template (as the server defaulted it), owned by the CronJob.
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(
                name="nightly-manual",
                annotations={"cronjob.kubernetes.io/instantiate": "manual"},
                owner_references=[
                    client.V1OwnerReference(
                        api_version="batch/v1",
                        kind="CronJob",
                        name="nightly",
                        uid=str(meta(cron).uid),
                        controller=True,
                    )
                ],
            ),
            spec=cron.spec.job_template.spec,
        ),
    )

    def complete() -> client.V1JobStatus | None:
        status = batch.read_namespaced_job_status("nightly-manual", namespace).status
        return status if condition_true(status, "Complete") else None

    assert wait_for("the Job Complete (its pod Succeeded under KWOK)", complete).succeeded == 1
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector="batch.kubernetes.io/job-name=nightly-manual"
    )
    assert [p.status.phase for p in pods.items if p.status] == ["Succeeded"]

    batch.delete_namespaced_cron_job("nightly", namespace, propagation_policy="Background")
    wait_for(
        "the garbage collector deletes the CronJob's Job",
        lambda: not batch.list_namespaced_job(namespace).items,
    )


def test_server_reports_the_kubernetes_version_it_was_built_from(api: client.ApiClient) -> None:
    go_mod = (REPO_ROOT / "tools" / "kubernetes" / "go.mod").read_text()
    pinned = re.search(r"^\s*k8s\.io/kubernetes (v1\.(\d+)\.\d+)", go_mod, re.MULTILINE)
    assert pinned is not None
    info = client.VersionApi(api).get_code()
    assert (info.git_version, info.major, info.minor) == (pinned[1], "1", pinned[2])


def test_missing_binaries_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run `make tools-test`") as missing:
        control_plane_binaries(tmp_path / "bin", tmp_path / "stages.yaml")
    for name in BINARIES:
        assert str(tmp_path / "bin" / name) in str(missing.value)


def test_start_failure_raises_with_the_log_tail_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    cluster = KubeCluster(tmp_path / "broken", nodes=1)
    # Someone else holds etcd's port: etcd exits at once.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", cluster.etcd_port))
        squatter.listen()
        with pytest.raises(KubeClusterError, match=r"^etcd ") as failed:
            cluster.start(timeout=30)
    assert "address already in use" in str(failed.value)
    assert str(tmp_path / "broken" / "etcd.log") in str(failed.value)
    assert cluster.components
    assert not any(c.running for c in cluster.components)
