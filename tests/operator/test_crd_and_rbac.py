"""The chart's CRD and the operator's RBAC rules, as the real API server sees them."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from relayq.operator.kube import DELETION_COST
from tests.chart.render import template
from tests.kube.cluster import KubeCluster
from tests.operator.kubeobjects import (
    GROUP,
    PLURAL,
    REDIS_SECRET,
    VERSION,
    autoscaler,
    create_autoscaler,
    wait_for,
)


def rejected(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as caught:
        create_autoscaler(api, namespace, body)
    assert caught.value.status == 422, caught.value.body
    return str(caught.value.body)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"priority": "urgent"}, "spec.priority"),
        ({"minReplicas": 4, "maxReplicas": 2}, "maxReplicas must be at least minReplicas"),
        ({"minReplicas": -1}, "spec.minReplicas"),
        ({"maxReplicas": 0}, "spec.maxReplicas"),
        ({"targetBacklogPerReplica": 0}, "spec.targetBacklogPerReplica"),
        ({"pollingIntervalSeconds": 0.1}, "spec.pollingIntervalSeconds"),
        ({"scaleDown": {"maxStep": 0}}, "spec.scaleDown.maxStep"),
        ({"slaTargetSeconds": 0}, "spec.slaTargetSeconds"),
        ({"keyPrefix": "a{b}"}, "spec.keyPrefix"),
        ({"redis": {"secretRef": {"name": "r"}}}, "spec.redis.secretRef.key"),
        (
            {"redis": {"secretRef": {"name": "r", "key": "u"}, "sentinel": {"sentinelsKey": "s"}}},
            "spec.redis.sentinel.masterNameKey",
        ),
    ],
)
def test_crd_refuses_invalid_specs(
    admin: client.ApiClient, namespace: str, change: dict[str, Any], complaint: str
) -> None:
    body = autoscaler("bad", "worker", "high")
    body["spec"].update(change)
    assert complaint in rejected(admin, namespace, body)


def test_crd_fills_in_the_defaults(admin: client.ApiClient, namespace: str) -> None:
    body = autoscaler("defaults", "worker", "medium")
    for key in ("minReplicas", "pollingIntervalSeconds"):
        del body["spec"][key]
    create_autoscaler(admin, namespace, body)
    got = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "defaults"
    )
    spec = got["spec"]
    assert spec["keyPrefix"] == "relayq"
    assert spec["minReplicas"] == 0 and spec["activationBacklog"] == 0
    assert spec["pollingIntervalSeconds"] == 2
    assert spec["scaleUp"] == {"stabilizationWindowSeconds": 0}
    assert spec["scaleDown"] == {"stabilizationWindowSeconds": 60}
    assert spec["paused"] is False


def test_kubectl_columns_and_short_name(
    kube_cluster: KubeCluster, admin: client.ApiClient, namespace: str
) -> None:
    create_autoscaler(admin, namespace, autoscaler("cols", "worker", "critical"))
    client.CustomObjectsApi(admin).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "cols",
        {"status": {"backlog": 7, "desiredReplicas": 2, "currentReplicas": 1}},
        _content_type="application/merge-patch+json",
    )
    # What `kubectl get wa` asks for: the server-side table.
    token = json.loads(Path(kube_cluster.kubeconfig_path).read_text())["users"][0]["user"]["token"]
    request = urllib.request.Request(
        f"{kube_cluster.server_url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        },
    )
    context = ssl.create_default_context(cafile=str(kube_cluster.ca_path))
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        table = json.loads(response.read())
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == ["Name", "Priority", "Backlog", "Desired", "Current", "Age"]
    assert table["rows"][0]["cells"][:5] == ["cols", "critical", 7, 2, 1]

    ext = client.ApiextensionsV1Api(admin)
    crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    assert crd.spec.names.short_names == ["wa"]
    assert crd.spec.scope == "Namespaced"


@pytest.mark.parametrize(
    ("verb", "group", "resource", "subresource", "allowed"),
    [
        ("patch", "apps", "deployments", "scale", True),
        ("get", "apps", "deployments", "scale", True),
        ("patch", "apps", "deployments", "", False),
        ("update", "apps", "deployments", "", False),
        ("delete", "apps", "deployments", "", False),
        ("patch", "", "pods", "", True),
        ("delete", "", "pods", "", False),
        ("create", "", "pods", "", False),
        ("get", "", "secrets", "", False),  # only by name, below
        ("list", "", "secrets", "", False),
        ("watch", "", "secrets", "", False),
        ("create", "", "events", "", True),
        ("watch", GROUP, PLURAL, "", True),
        ("patch", GROUP, PLURAL, "status", True),
        ("create", GROUP, PLURAL, "", False),
        ("delete", GROUP, PLURAL, "", False),
        ("list", "apiextensions.k8s.io", "customresourcedefinitions", "", False),
    ],
)
def test_operator_service_account_holds_only_what_it_uses(
    kube_cluster: KubeCluster,
    operator_kubeconfig: Path,
    namespace: str,
    verb: str,
    group: str,
    resource: str,
    subresource: str,
    allowed: bool,
) -> None:
    with kube_cluster.api_client(operator_kubeconfig) as api:
        review = client.AuthorizationV1Api(api).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": verb,
                        "group": group,
                        "resource": resource,
                        "subresource": subresource,
                    }
                }
            }
        )
    assert review.status.allowed is allowed


def can(api: client.ApiClient, namespace: str, verb: str, resource: str, name: str) -> bool:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace, "verb": verb, "resource": resource, "name": name,
                }
            }
        }
    )  # fmt: skip
    return bool(review.status.allowed)


def test_operator_reads_only_the_redis_secret_it_is_given_by_name(
    kube_cluster: KubeCluster, operator_kubeconfig: Path, namespace: str
) -> None:
    with kube_cluster.api_client(operator_kubeconfig) as api:
        assert can(api, namespace, "get", "secrets", REDIS_SECRET)
        assert not can(api, namespace, "get", "secrets", "relayq-relayer-keypair")
        assert not can(api, namespace, "get", "secrets", "relayq-mongodb")


def pod_patch_policy(helm_home: Path, namespace: str) -> list[dict[str, Any]]:
    """The chart's pod-patch policy and binding, rendered for a release in `namespace`."""
    render = template(
        helm_home,
        extra=["--namespace", namespace, "--show-only", "templates/operator/pod-patch-policy.yaml"],
    )
    return render.objects


@pytest.fixture
def pod_patch_policy_installed(
    admin: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[None]:
    registration = client.AdmissionregistrationV1Api(admin)
    policy, binding = pod_patch_policy(tmp_path / "helm", namespace)
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
    registration.create_validating_admission_policy(policy)
    registration.create_validating_admission_policy_binding(binding)
    yield
    registration.delete_validating_admission_policy_binding(binding["metadata"]["name"])
    registration.delete_validating_admission_policy(policy["metadata"]["name"])


def _patch(
    api: client.ApiClient, namespace: str, body: dict[str, Any], pod: str = "worker-0"
) -> int:
    """The HTTP status of a merge patch of `pod`."""
    try:
        client.CoreV1Api(api).patch_namespaced_pod(
            pod, namespace, body, _content_type="application/merge-patch+json"
        )
    except client.ApiException as exc:
        return int(exc.status)
    return 200


def _create_pod(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": {"app": "worker"}, "annotations": {"keep": "me"}},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": "worker", "image": "registry.example.com/relayq/worker:1"}],
            },
        },
    )


@pytest.mark.usefixtures("pod_patch_policy_installed")
def test_operator_pod_patches_may_change_only_the_deletion_cost(
    kube_cluster: KubeCluster, admin: client.ApiClient, operator_kubeconfig: Path, namespace: str
) -> None:
    _create_pod(admin, namespace, "probe")
    _create_pod(admin, namespace, "worker-0")
    attempts = iter(range(10_000))

    def in_force() -> bool:
        # A new image each time: a patch that changes nothing would always pass.
        image = f"evil.example.com/x:{next(attempts)}"
        body = {"spec": {"containers": [{"name": "worker", "image": image}]}}
        return _patch(api, namespace, body, pod="probe") == 403

    with kube_cluster.api_client(operator_kubeconfig) as api:
        # The policy takes effect once the API server has loaded it.
        wait_for("the policy in force", in_force)
        assert _patch(api, namespace, {"metadata": {"annotations": {DELETION_COST: "300"}}}) == 200
        assert _patch(api, namespace, {"metadata": {"annotations": {DELETION_COST: None}}}) == 200
        refused = [
            {"spec": {"containers": [{"name": "worker", "image": "evil.example.com/x:1"}]}},
            {"metadata": {"labels": {"app": "other"}}},
            {"metadata": {"annotations": {"keep": "changed"}}},
            {"metadata": {"annotations": {"keep": None}}},
            {"metadata": {"annotations": {"new": "one"}}},
            {"metadata": {"finalizers": ["example.com/hold"]}},
            {"spec": {"activeDeadlineSeconds": 5}},
        ]
        for body in refused:
            assert _patch(api, namespace, body) == 403, body
    pod = client.CoreV1Api(admin).read_namespaced_pod("worker-0", namespace)
    assert pod.spec.containers[0].image == "registry.example.com/relayq/worker:1"
    assert pod.metadata.annotations == {"keep": "me"}
    # Only the operator is bound: others keep the rights RBAC gives them.
    assert _patch(admin, namespace, {"metadata": {"labels": {"app": "other"}}}) == 200
