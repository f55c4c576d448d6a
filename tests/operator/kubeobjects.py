"""Objects and reads the operator tests need on the real API server (admin client)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from kubernetes import client

from relayq.dev.servers import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "relayq"
CRD_FILE = CHART / "crds" / "workerautoscaler.yaml"
RBAC_FILE = CHART / "files" / "operator-rbac.yaml"
GROUP, VERSION, PLURAL = "relayq.io", "v1alpha1", "workerautoscalers"
OPERATOR_SA = "relayq-operator"
# The Secret the tests' WorkerAutoscalers name (the chart's is `<release>-redis`).
REDIS_SECRET = "redis"
# The generated client picks JSON Patch for a PATCH unless told otherwise.
MERGE_PATCH = "application/merge-patch+json"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll probe until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last value {value!r})")
        time.sleep(interval)


def install_crd(api: client.ApiClient) -> None:
    """Create (or replace) the chart's CRD and wait until it is Established."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)

    def established() -> bool:
        got = ext.read_custom_resource_definition(crd["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in got.status.conditions or []
        )

    wait_for("the WorkerAutoscaler CRD established", established)


def rbac_rules(secrets: tuple[str, ...] = (REDIS_SECRET,)) -> list[dict[str, Any]]:
    """The chart's rules: the shared file, and `get` on the named Redis Secrets only."""
    rules = yaml.safe_load(RBAC_FILE.read_text())
    assert isinstance(rules, list)
    return [*rules, secret_rule(secrets)]


def secret_rule(names: tuple[str, ...]) -> dict[str, Any]:
    """The rule templates/operator/rbac.yaml adds: these Secrets by name, nothing else."""
    return {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": list(names),
        "verbs": ["get"],
    }


def grant_operator(api: client.ApiClient, namespace: str, rules: list[dict[str, Any]]) -> None:
    """A ServiceAccount bound to a Role holding exactly `rules`."""
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": OPERATOR_SA}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": OPERATOR_SA}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": OPERATOR_SA},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": OPERATOR_SA,
            },
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": namespace}],
        },
    )


def create_deployment(api: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    labels = {"app": name}
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "worker", "image": "relayq-worker:test"}],
                        "tolerations": [{"operator": "Exists"}],
                    },
                },
            },
        },
    )


def create_secret(api: client.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def replace_secret(api: client.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api).patch_namespaced_secret(
        name,
        namespace,
        {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}},
        _content_type=MERGE_PATCH,
    )


def autoscaler(
    name: str, target: str, priority: str, secret: str = "redis", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scaleTargetRef": {"name": target},
        "priority": priority,
        "redis": {"secretRef": {"name": secret, "key": "url"}},
        "targetBacklogPerReplica": 10,
        "minReplicas": 0,
        "maxReplicas": 5,
        "pollingIntervalSeconds": 1,
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkerAutoscaler",
        "metadata": {"name": name},
        "spec": body,
    }


def create_autoscaler(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )


def autoscaler_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    got = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    status = got.get("status") or {}
    assert isinstance(status, dict)
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def spec_replicas(api: client.ApiClient, namespace: str, name: str) -> int:
    scale = client.AppsV1Api(api).read_namespaced_deployment_scale(name, namespace)
    return int(scale.spec.replicas or 0)


def pods(api: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    listed = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return [p for p in listed.items if p.metadata.deletion_timestamp is None]


def running_pods(api: client.ApiClient, namespace: str, app: str) -> list[str]:
    return sorted(p.metadata.name for p in pods(api, namespace, app) if p.status.phase == "Running")


def event_reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [e.reason for e in events.items]


def release_namespace(api: client.ApiClient, namespace: str) -> None:
    """Delete a test namespace; WorkerAutoscalers lose kopf's finalizer first (no operator runs)."""
    custom = client.CustomObjectsApi(api)
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    for item in listed.get("items", []):
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            item["metadata"]["name"],
            {"metadata": {"finalizers": None}},
            _content_type=MERGE_PATCH,
        )
    client.CoreV1Api(api).delete_namespace(namespace)
