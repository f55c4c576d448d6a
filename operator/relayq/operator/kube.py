"""The Kubernetes calls the operator makes besides kopf's own, on kubernetes.aio.

One Configuration is loaded at login and shared by kopf (as its ConnectionInfo)
and by these calls, so both act with the same identity and the same RBAC.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

from relayq.operator.spec import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# Every request is bounded: a stuck API call must not stall a poll loop.
REQUEST_TIMEOUT_SECONDS = 10.0

__all__ = ["DELETION_COST", "ApiException", "Kube", "ScaleState", "load_configuration"]


async def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """From `kubeconfig` if given; else in-cluster; else $KUBECONFIG or ~/.kube/config."""
    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg
        )
        return cfg
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


async def connection_info(cfg: client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from a loaded Configuration (as kopf's own login_via_client does)."""
    header = await cfg.get_api_key_with_prefix("BearerToken") or await cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None)
    if len(parts) == 1:
        token = parts[0]
    elif len(parts) == 2:
        scheme, token = parts[0], parts[1]
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


@dataclass(frozen=True)
class ScaleState:
    """A Deployment's scale subresource: wanted and existing replicas, and its pods' selector."""

    spec_replicas: int
    status_replicas: int
    selector: str


class Kube:
    """Typed wrappers of the few calls the autoscaler makes."""

    def __init__(self, cfg: client.Configuration) -> None:
        self._api = client.ApiClient(cfg)
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]

    async def read_scale(self, namespace: str, name: str) -> ScaleState:
        scale = await self._apps.read_namespaced_deployment_scale(
            name, namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        spec = scale.spec.replicas if scale.spec and scale.spec.replicas is not None else 0
        status = scale.status
        return ScaleState(
            spec_replicas=int(spec),
            status_replicas=int(status.replicas) if status and status.replicas else 0,
            selector=str(status.selector or "") if status else "",
        )

    async def patch_scale(self, namespace: str, name: str, replicas: int) -> None:
        await self._apps.patch_namespaced_deployment_scale(
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    async def pod_deletion_costs(self, namespace: str, selector: str) -> dict[str, str | None]:
        """Each live pod of the selector, with its current deletion-cost annotation."""
        pods = await self._core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        costs: dict[str, str | None] = {}
        for pod in pods.items:
            meta = pod.metadata
            if meta is None or meta.name is None or meta.deletion_timestamp is not None:
                continue
            costs[meta.name] = (meta.annotations or {}).get(DELETION_COST)
        return costs

    async def set_deletion_cost(self, namespace: str, pod: str, cost: int) -> None:
        await self._core.patch_namespaced_pod(
            pod,
            namespace,
            {"metadata": {"annotations": {DELETION_COST: str(cost)}}},
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    async def secret_values(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self._core.read_namespaced_secret(
            name, namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        data: Mapping[str, bytes | str] = secret.data or {}
        values = {k: base64.b64decode(v).decode() for k, v in data.items()}
        values.update(secret.string_data or {})
        return values

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(status)},
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
