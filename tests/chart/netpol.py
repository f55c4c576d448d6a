"""NetworkPolicy semantics, evaluated on rendered objects: which flows they admit.

A flow from one endpoint to another on a port is admitted when the source may
send it (no policy selecting the source isolates its egress, or one admits it)
and the destination may receive it (likewise for ingress). Endpoints are the
pods of the rendered workloads plus stand-ins for the world around them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.chart.render import NAMESPACE, Render

NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster's pods."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None

    def __hash__(self) -> int:
        return hash(self.name)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector; an empty one matches everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(endpoint.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if not endpoint.is_pod:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {NAMESPACE_LABEL: endpoint.namespace or ""}
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), endpoint.labels)


def port_matches(
    ports: Iterable[Mapping[str, Any]] | None, port: int, protocol: str, dst: Endpoint
) -> bool:
    listed = list(ports or [])
    if not listed:
        return True
    for p in listed:
        if p.get("protocol", "TCP") != protocol:
            continue
        number = p.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            number = dst.ports.get(number)
        end = p.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


class Policies:
    """The NetworkPolicies of a render, all in the release namespace."""

    def __init__(self, render: Render) -> None:
        self.items = render.of_kind("NetworkPolicy")

    def selecting(self, pod: Endpoint, direction: str) -> list[dict[str, Any]]:
        found = []
        for policy in self.items:
            namespace = policy["metadata"].get("namespace", NAMESPACE)
            spec = policy["spec"]
            if namespace != pod.namespace or not selector_matches(spec["podSelector"], pod.labels):
                continue
            types = spec.get("policyTypes") or (
                ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
            )
            if direction in types:
                found.append(policy)
        return found

    def admits(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
        return self._sends(src, dst, port, protocol) and self._receives(src, dst, port, protocol)

    def _sends(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
        if not src.is_pod:
            return True
        policies = self.selecting(src, "Egress")
        if not policies:
            return True
        return any(
            (not rule.get("to") or any(peer_matches(p, NAMESPACE, dst) for p in rule["to"]))
            and port_matches(rule.get("ports"), port, protocol, dst)
            for policy in policies
            for rule in policy["spec"].get("egress") or []
        )

    def _receives(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
        if not dst.is_pod:
            return True
        policies = self.selecting(dst, "Ingress")
        if not policies:
            return True
        return any(
            (not rule.get("from") or any(peer_matches(p, NAMESPACE, src) for p in rule["from"]))
            and port_matches(rule.get("ports"), port, protocol, dst)
            for policy in policies
            for rule in policy["spec"].get("ingress") or []
        )


def release_pods(render: Render) -> list[Endpoint]:
    """One endpoint per workload's pod template, named after its component."""
    pods = []
    for i, (obj, template) in enumerate(render.workloads()):
        labels = template["metadata"]["labels"]
        ports = {
            p["name"]: p["containerPort"]
            for c in template["spec"]["containers"]
            for p in c.get("ports") or []
            if "name" in p
        }
        worker = labels.get("relayq.io/role") == "worker"
        label = "worker" if worker else labels.get("app.kubernetes.io/component", obj["kind"])
        pods.append(Endpoint(f"{label}#{i}", f"10.244.0.{i + 10}", NAMESPACE, labels, ports))
    return pods


def component(endpoint: Endpoint) -> str:
    return endpoint.name.split("#")[0]


def admitted_flows(
    policies: Policies,
    endpoints: list[Endpoint],
    ports: Iterable[tuple[int, str]],
) -> set[tuple[str, str, int, str]]:
    """(source, destination, port, protocol) of every admitted flow, by component name;
    flows between two endpoints outside the release are left out."""
    flows = set()
    ports = list(ports)
    for src in endpoints:
        for dst in endpoints:
            if not (src.namespace == NAMESPACE or dst.namespace == NAMESPACE):
                continue
            for port, protocol in ports:
                if policies.admits(src, dst, port, protocol):
                    flows.add((component(src), component(dst), port, protocol))
    return flows
