"""The chart's NetworkPolicies: every pod of the release is isolated both ways,
and exactly the intended flows are admitted (evaluated in tests/chart/netpol.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.netpol import Endpoint, Policies, admitted_flows, release_pods
from tests.chart.render import CHART, Render, template

DEFAULT = CHART / "ci" / "01-default-values.yaml"
PUBLIC = CHART / "ci" / "03-ingress-tls-and-monitoring-values.yaml"

# The world around the release: a host on the internet, cluster DNS, a pod of
# another application, and (for ci/03) the ingress controller, Prometheus and
# an address inside the relayer's configured CIDRs.
INTERNET = Endpoint("internet", "192.0.2.10")
DNS = Endpoint("dns", "10.96.0.10", "kube-system", {"k8s-app": "kube-dns"})
STRANGER = Endpoint("stranger", "10.244.9.9", "other", {"app": "curious"})
INGRESS = Endpoint("ingress", "10.244.8.1", "ingress-nginx", {"app": "controller"})
PROMETHEUS = Endpoint("prometheus", "10.244.7.1", "monitoring", {"app": "prometheus"})
RPC = Endpoint("rpc", "203.0.113.7")
OUTSIDE = [INTERNET, DNS, STRANGER, INGRESS, PROMETHEUS, RPC]

PORTS = [
    (53, "UDP"), (53, "TCP"), (80, "TCP"), (443, "TCP"), (6443, "TCP"), (8080, "TCP"),
    (8090, "TCP"), (9100, "TCP"), (6379, "TCP"), (26379, "TCP"), (27017, "TCP"), (22, "TCP"),
]  # fmt: skip
RELAYQ = ["api", "worker", "recovery", "operator"]
DATASTORES = ["redis", "redis-sentinel", "mongodb", "mongodb-init"]


def internal_flows() -> set[tuple[str, str, int, str]]:
    """Pod to pod inside the release: processes to datastores, datastores among themselves."""
    flows = set()
    for client in RELAYQ:
        flows |= {(client, "redis", 6379, "TCP"), (client, "redis-sentinel", 26379, "TCP")}
        if client != "operator":  # the operator reads Redis only
            flows.add((client, "mongodb", 27017, "TCP"))
    for a in ("redis", "redis-sentinel"):
        flows |= {(a, "redis", 6379, "TCP"), (a, "redis-sentinel", 26379, "TCP")}
    flows |= {("mongodb", "mongodb", 27017, "TCP"), ("mongodb-init", "mongodb", 27017, "TCP")}
    return flows


def dns_flows() -> set[tuple[str, str, int, str]]:
    return {(c, "dns", 53, p) for c in [*RELAYQ, *DATASTORES] for p in ("UDP", "TCP")}


def kube_api_flows() -> set[tuple[str, str, int, str]]:
    # networkPolicy.kubeApi.to is empty by default: any address on the API server's ports.
    return {("operator", o.name, p, "TCP") for o in OUTSIDE for p in (443, 6443)}


def flows_of(render: Render) -> set[tuple[str, str, int, str]]:
    return admitted_flows(Policies(render), [*release_pods(render), *OUTSIDE], PORTS)


@pytest.fixture(scope="module")
def default_render(helm_home: Path) -> Render:
    return template(helm_home, [DEFAULT])


@pytest.fixture(scope="module")
def public_render(helm_home: Path) -> Render:
    return template(helm_home, [PUBLIC])


def test_every_pod_of_the_release_is_isolated_both_ways(ci_render: Render) -> None:
    if not ci_render.values["networkPolicy"]["enabled"]:
        pytest.skip("policies switched off")
    policies = Policies(ci_render)
    pods = release_pods(ci_render)
    assert pods
    for pod in pods:
        assert policies.selecting(pod, "Ingress"), f"{pod.name}: ingress not isolated"
        assert policies.selecting(pod, "Egress"), f"{pod.name}: egress not isolated"


def test_every_pod_resolves_names_and_nothing_from_outside_reaches_the_datastores(
    ci_render: Render,
) -> None:
    if not ci_render.values["networkPolicy"]["enabled"]:
        pytest.skip("policies switched off")
    flows = flows_of(ci_render)
    for pod in {p.name.split("#")[0] for p in release_pods(ci_render)}:
        assert {(pod, "dns", 53, "UDP"), (pod, "dns", 53, "TCP")} <= flows
    outside = {o.name for o in OUTSIDE}
    for src, dst, port, _ in flows:
        if src in outside:
            assert dst in {"api", "worker", "operator", "signer"}, (src, dst, port)
            assert dst != "signer" or src == "prometheus", (src, dst, port)  # its metrics only


def test_default_install_admits_exactly_the_intended_flows(default_render: Render) -> None:
    # A public API (apiFrom empty), no metrics scrapers, no relayer: the API's public
    # port is open to anyone, its metrics port (9100) to nobody.
    public_api = {(o.name, "api", 8080, "TCP") for o in OUTSIDE}
    expected = internal_flows() | dns_flows() | kube_api_flows() | public_api
    flows = flows_of(default_render)
    assert flows - expected == set(), "admitted but not intended"
    assert expected - flows == set(), "intended but not admitted"


def test_public_setup_admits_the_ingress_prometheus_and_the_chain_hosts_only(
    public_render: Render,
) -> None:
    # ci/03: apiFrom = the ingress controller's namespace, metricsFrom = monitoring,
    # the relayer's CIDRs; the API and the workers reach the chain hosts.
    expected = internal_flows() | dns_flows() | kube_api_flows()
    # Prometheus reaches the API's metrics port only, the ingress its public port only.
    expected |= {("ingress", "api", 8080, "TCP"), ("prometheus", "api", 9100, "TCP")}
    expected |= {("prometheus", "worker", 9100, "TCP"), ("prometheus", "operator", 9100, "TCP")}
    expected |= {("api", "rpc", 443, "TCP"), ("worker", "rpc", 443, "TCP")}
    # The reconcile CronJob (with the relayer): its datastores, names and the chain hosts.
    expected |= {
        ("reconcile", "redis", 6379, "TCP"),
        ("reconcile", "redis-sentinel", 26379, "TCP"),
        ("reconcile", "mongodb", 27017, "TCP"),
        ("reconcile", "rpc", 443, "TCP"),
    }
    expected |= {("reconcile", "dns", 53, "UDP"), ("reconcile", "dns", 53, "TCP")}  # fmt: skip
    # The signer: reached by the API, the workers, reconcile (and Prometheus); it reaches
    # the chain hosts for lookup tables and tip accounts, and names.
    expected |= {("api", "signer", 8090, "TCP"), ("worker", "signer", 8090, "TCP"),
                 ("reconcile", "signer", 8090, "TCP"), ("prometheus", "signer", 8090, "TCP"),
                 ("signer", "rpc", 443, "TCP"), ("signer", "dns", 53, "UDP"),
                 ("signer", "dns", 53, "TCP")}  # fmt: skip
    flows = flows_of(public_render)
    assert flows - expected == set(), "admitted but not intended"
    assert expected - flows == set(), "intended but not admitted"
    assert ("internet", "api", 8080, "TCP") not in flows
    assert ("prometheus", "api", 8080, "TCP") not in flows
    assert ("ingress", "api", 9100, "TCP") not in flows
