"""The chart's CRD and the operator's RBAC rules, as the real API server sees them."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube.cluster import KubeCluster
from tests.operator.kubeobjects import (
    GROUP,
    PLURAL,
    VERSION,
    autoscaler,
    create_autoscaler,
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
        ("get", "", "secrets", "", True),
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
