"""values.yaml and values.schema.json: documented, typo-proof, and the failure paths."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from relayq.relayer.allowlist import parse_swap_accounts
from relayq.relayer.baskets import parse_baskets
from tests.chart.render import CHART, CI_VALUES, RELEASE, HelmError, Render, template

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()


def test_defaults_and_every_ci_file_satisfy_the_schema() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    validator.validate(yaml.safe_load(VALUES_TEXT))
    for path in CI_VALUES:
        validator.validate(yaml.safe_load(path.read_text()) or {})


def _leaf_lines() -> list[tuple[int, str]]:
    """(line number, key) of every key with a scalar or list/map literal value."""
    lines = VALUES_TEXT.splitlines()
    leaves = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):\s*(\S.*)?$", line)
        if match and match.group(3) is not None:
            leaves.append((number, match.group(2)))
    return leaves


def _has_doc_comment(lines: list[str], number: int) -> bool:
    """A `# --` comment right above this line (other comment lines may sit between)."""
    above = number - 1
    while above >= 0 and lines[above].strip().startswith("#"):
        if "# --" in lines[above]:
            return True
        above -= 1
    return False


def _ancestors(lines: list[str], number: int) -> list[int]:
    """Line numbers of the enclosing keys, innermost first, by indentation."""
    found = []
    indent = len(lines[number]) - len(lines[number].lstrip())
    for above in range(number - 1, -1, -1):
        text = lines[above]
        if not text.strip() or text.strip().startswith("#"):
            continue
        this = len(text) - len(text.lstrip())
        if this < indent:
            found.append(above)
            indent = this
    return found


def test_every_value_is_documented_helm_docs_style() -> None:
    lines = VALUES_TEXT.splitlines()
    undocumented = [
        key
        for number, key in _leaf_lines()
        if not any(_has_doc_comment(lines, n) for n in [number, *_ancestors(lines, number)])
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api.replcas", "2"),  # a typo at the second level
        ("workers.priorities.critical.concurency", "5"),  # deep inside a priority
        ("workers.priorities.urgent.enabled", "true"),  # a priority that does not exist
        ("redis.sentinel.quorom", "2"),
        ("monitoring.enable", "true"),
    ],
)
def test_schema_rejects_a_mistyped_key(helm_home: Path, key: str, value: str) -> None:
    with pytest.raises(HelmError) as caught:
        template(helm_home, sets={key: value})
    message = str(caught.value)
    assert "additional properties" in message.lower() or "additionalProperties" in message
    assert key.rsplit(".", 1)[1] in message


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("config.logLevel", "VERBOSE", "logLevel"),
        ("workers.priorities.high.concurrency", "0", "concurrency"),
        ("api.containerPort", "70000", "containerPort"),
        ("config.keyPrefix", "a{b}", "keyPrefix"),
        ("redis.external.url", "http://wrong", "url"),
    ],
)
def test_schema_rejects_a_bad_value(helm_home: Path, key: str, value: str, complaint: str) -> None:
    with pytest.raises(HelmError, match=complaint):
        template(helm_home, sets={key: value})


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({"relayer.enabled": "true", "relayer.contractOwner": "x"}, "relayer.keypair"),
        ({"relayer.enabled": "true", "relayer.keypair.existingSecret": "k"}, "contractOwner"),
        ({"redis.enabled": "false"}, "redis.external.url"),
        ({"mongodb.enabled": "false"}, "mongodb.external.url"),
        # An empty registry would pull relayq/* from Docker Hub, where anyone can publish it.
        ({"image.registry": ""}, "image.registry is required"),
        # With policies on, the scrapers and the chain hosts must be named, not guessed.
        ({"monitoring.enabled": "true"}, "networkPolicy.metricsFrom"),
        # The metrics never share the public port the Service and the Ingress route to.
        ({"api.metricsPort": "8080"}, "api.metricsPort must differ from api.containerPort"),
        (
            {
                "relayer.enabled": "true",
                "relayer.contractOwner": "x",
                "relayer.keypair.existingSecret": "k",
            },
            "networkPolicy.relayerEgress.to",
        ),
    ],
)
def test_incomplete_settings_fail_with_a_clear_message(
    helm_home: Path, sets: dict[str, str], complaint: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(complaint)):
        template(helm_home, sets=sets)


def test_priority_overrides_reach_every_process(helm_home: Path) -> None:
    render = template(
        helm_home,
        sets={
            "workers.priorities.high.concurrency": "7",
            "workers.priorities.high.maxAttempts": "9",
            "workers.priorities.low.backoffMaxSeconds": "120",
        },
    )
    config = render.get("ConfigMap", f"{RELEASE}-config")
    assert config is not None
    data = config["data"]
    assert data["RELAYQ_HIGH_CONCURRENCY"] == "7"
    assert data["RELAYQ_HIGH_MAX_ATTEMPTS"] == "9"
    assert data["RELAYQ_LOW_BACKOFF_MAX_SECONDS"] == "120"
    assert "RELAYQ_MEDIUM_MAX_ATTEMPTS" not in data  # null: the built-in default
    assert "RELAYQ_BATCH_SLA_SECONDS" not in data  # batch has no SLA
    for name in ("api", "worker-high", "worker-low"):
        deployment = render.get("Deployment", f"{RELEASE}-{name}")
        assert deployment is not None
        env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": f"{RELEASE}-config"}} in env_from
    scaler = render.get("WorkerAutoscaler", f"{RELEASE}-worker-high")
    assert scaler is not None and scaler["spec"]["slaTargetSeconds"] == 5
    assert (
        "slaTargetSeconds"
        not in (render.get("WorkerAutoscaler", f"{RELEASE}-worker-batch") or {"spec": {}})["spec"]
    )


def test_a_priority_autoscaling_override_merges_over_the_shared_defaults(helm_home: Path) -> None:
    render = template(
        helm_home,
        sets={
            "workers.autoscaling.scaleDown.maxStep": "3",
            "workers.priorities.low.autoscaling.scaleDown.maxStep": "2",
            "workers.priorities.low.autoscaling.maxReplicas": "7",
        },
    )
    low = render.get("WorkerAutoscaler", f"{RELEASE}-worker-low")
    medium = render.get("WorkerAutoscaler", f"{RELEASE}-worker-medium")
    assert low is not None and medium is not None
    assert low["spec"]["scaleDown"] == {"stabilizationWindowSeconds": 120, "maxStep": 2}
    assert low["spec"]["maxReplicas"] == 7
    assert medium["spec"]["scaleDown"]["maxStep"] == 3


def test_external_datastores_are_wired_from_one_secret(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "external" in p.name)
    render = template(helm_home, [path])
    assert not render.of_kind("StatefulSet")
    # No policy for datastores the release does not run; its clients' egress reaches them.
    policies = render.names("NetworkPolicy")
    assert not {f"{RELEASE}-redis", f"{RELEASE}-redis-sentinel", f"{RELEASE}-mongodb"} & policies
    api_policy = render.get("NetworkPolicy", f"{RELEASE}-api")
    assert api_policy is not None
    egress_ports = {p["port"] for r in api_policy["spec"]["egress"] for p in r["ports"]}
    assert {6379, 26379, 27017} <= egress_ports
    redis = render.get("Secret", f"{RELEASE}-redis-external")
    assert redis is not None
    assert set(redis["data"]) == {"redis-url", "redis-password", "sentinels", "master-name"}
    api = render.get("Deployment", f"{RELEASE}-api")
    assert api is not None
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RELAYQ_REDIS_SENTINELS"]["valueFrom"]["secretKeyRef"]["key"] == "sentinels"
    assert env["RELAYQ_MONGO_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-mongodb-external",
        "key": "mongodb-url",
    }
    config = render.get("ConfigMap", f"{RELEASE}-config")
    assert config is not None and config["data"]["RELAYQ_MONGO_DATABASE"] == "relayq_prod"


def test_existing_secrets_replace_every_generated_one(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "existing-secrets" in p.name)
    render = template(helm_home, [path])
    assert render.of_kind("Secret") == []
    api = render.get("Deployment", f"{RELEASE}-api")
    assert api is not None
    pod = api["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "relayer-keypair" not in volumes
    assert volumes["signer-token"]["secret"]["secretName"] == "relayq-signer-token"
    assert volumes["auth"]["secret"]["secretName"] == "relayq-auth"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert "RELAYQ_RELAYER_KEYPAIR_FILE" not in env
    signer = render.get("Deployment", f"{RELEASE}-signer")
    assert signer is not None
    signer_volumes = {v["name"]: v for v in signer["spec"]["template"]["spec"]["volumes"]}
    assert signer_volumes["relayer-keypair"]["secret"]["secretName"] == "relayq-relayer"
    assert env["RELAYQ_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "relayq-redis"
    assert env["MONGODB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "relayq-mongodb"


def test_in_cluster_mongodb_url_names_every_member(helm_home: Path) -> None:
    render = template(helm_home)
    api = render.get("Deployment", f"{RELEASE}-api")
    assert api is not None
    env = [e["name"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]]
    # $(MONGODB_PASSWORD) is only expanded when defined earlier in the list.
    assert env.index("MONGODB_PASSWORD") < env.index("RELAYQ_MONGO_URL")
    url = next(
        e["value"]
        for e in api["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "RELAYQ_MONGO_URL"
    )
    hosts = url.split("@", 1)[1].split("/", 1)[0].split(",")
    assert hosts == [
        f"{RELEASE}-mongodb-{i}.{RELEASE}-mongodb-headless.relayq.svc:27017" for i in range(3)
    ]
    assert "replicaSet=rs0" in url


def test_observability_wraps_the_shared_files(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "monitoring" in p.name)
    render = template(helm_home, [path])
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    maps = [
        c for c in render.of_kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert len(maps) == len(dashboards) > 0
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, body),) = config_map["data"].items()
        assert json.loads(body) == json.loads((CHART / "files" / "dashboards" / name).read_text())
    (rule,) = render.of_kind("PrometheusRule")
    expected = yaml.safe_load((CHART / "files" / "alerts" / "relayq.rules.yaml").read_text())
    assert rule["spec"] == expected and rule["spec"]["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (monitor,) = render.of_kind("ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    # It selects the API's metrics Service alone, never the public one.
    selected = [
        s
        for s in render.of_kind("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == [f"{RELEASE}-api-metrics"]
    (port,) = selected[0]["spec"]["ports"]
    assert (port["name"], port["targetPort"]) == ("metrics", "metrics")
    (pod_monitor,) = render.of_kind("PodMonitor")
    components = pod_monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    assert set(components) == {"operator"} | {
        f"worker-{p}" for p in ("critical", "high", "medium", "low", "batch")
    }


def test_observability_is_off_by_default(helm_home: Path) -> None:
    render = template(helm_home)
    kinds = {o["kind"] for o in render.objects}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress"}
    assert not any(
        "grafana_dashboard" in c["metadata"]["labels"] for c in render.of_kind("ConfigMap")
    )


def test_ingress_routes_to_the_api_service_with_tls(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "ingress" in p.name)
    render = template(helm_home, [path])
    (ingress,) = render.of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "relayq-example-tls", "hosts": ["relayq.example.com"]}
    ]
    backends = [
        p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]
    ]
    assert backends == [{"name": f"{RELEASE}-api", "port": {"name": "http"}}]
    # The Service the Ingress names carries the public port only: no route to /metrics.
    public = render.get("Service", f"{RELEASE}-api")
    assert public is not None
    assert [(p["name"], p["targetPort"]) for p in public["spec"]["ports"]] == [("http", "http")]


def test_relayer_settings_reach_api_and_workers(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "ingress" in p.name)
    render = template(helm_home, [path])
    baskets = render.get("ConfigMap", f"{RELEASE}-baskets")
    assert baskets is not None
    values = yaml.safe_load(path.read_text())
    document = json.loads(baskets["data"]["baskets.json"])
    assert document == {"baskets": values["relayer"]["baskets"]}
    # The relayer's own loader accepts what the chart writes.
    assert set(parse_baskets(document)) == {"starter"}
    keypair = render.get("Secret", f"{RELEASE}-relayer-keypair")
    assert keypair is not None and set(keypair["data"]) == {"keypair.json"}
    key = Keypair.from_json(base64.b64decode(keypair["data"]["keypair.json"]).decode())
    assert len(bytes(key)) == 64
    Pubkey.from_string(values["relayer"]["contractOwner"])
    config = render.get("ConfigMap", f"{RELEASE}-config")
    assert config is not None
    assert config["data"]["RELAYQ_CONTRACT_OWNER"] == values["relayer"]["contractOwner"]
    assert config["data"]["RELAYQ_SOLANA_RPC_URL"] == "https://rpc.example.com"
    for name in ("api", "worker-critical"):
        deployment = render.get("Deployment", f"{RELEASE}-{name}")
        assert deployment is not None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RELAYQ_BASKETS_FILE"] == "/etc/relayq/baskets/baskets.json"
        # They sign through the signer; only the signer holds the key.
        assert env["RELAYQ_SIGNER_URL"] == f"http://{RELEASE}-signer:8090"
        assert env["RELAYQ_SIGNER_TOKEN_FILE"] == "/etc/relayq/signer-token/token"
        assert "RELAYQ_RELAYER_KEYPAIR_FILE" not in env
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/relayq/baskets" in mounts and "/etc/relayq/relayer" not in mounts
    signer = render.get("Deployment", f"{RELEASE}-signer")
    assert signer is not None
    container = signer["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RELAYQ_RELAYER_KEYPAIR_FILE"] == "/etc/relayq/relayer/keypair.json"


def test_declared_pools_reach_the_signer_api_and_workers_as_one_file(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "ingress" in p.name)
    render = template(helm_home, [path])
    baskets = render.get("ConfigMap", f"{RELEASE}-baskets")
    assert baskets is not None
    document = json.loads(baskets["data"]["pools.json"])
    assert document == {"programs": yaml.safe_load(path.read_text())["relayer"]["swapPools"]}
    # The allow-list's own loader accepts what the chart writes.
    assert len(parse_swap_accounts(document)) == 2
    for name in ("api", "worker-critical", "signer"):
        deployment = render.get("Deployment", f"{RELEASE}-{name}")
        assert deployment is not None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RELAYQ_SWAP_POOLS_FILE"] == "/etc/relayq/baskets/pools.json", name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/relayq/baskets" in mounts, name


def test_without_declared_pools_no_pools_file_is_set(helm_home: Path) -> None:
    path = next(p for p in CI_VALUES if "ingress" in p.name)
    render = template(helm_home, [path], sets={"relayer.swapPools": "null"})
    baskets = render.get("ConfigMap", f"{RELEASE}-baskets")
    assert baskets is not None and "pools.json" not in baskets["data"]
    for name in ("api", "signer"):
        deployment = render.get("Deployment", f"{RELEASE}-{name}")
        assert deployment is not None
        env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "RELAYQ_SWAP_POOLS_FILE" not in env, name


def test_a_config_change_changes_the_pod_template_checksum(helm_home: Path) -> None:
    def checksum(sets: dict[str, str]) -> str:
        api = template(helm_home, sets=sets).get("Deployment", f"{RELEASE}-api")
        assert api is not None
        return str(api["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) != checksum({"config.logLevel": "DEBUG"})
    assert checksum({}) == checksum({})


def _init_job(render: Render) -> dict[str, Any]:
    (job,) = render.of_kind("Job")
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "mongodb-init"
    return job


def test_mongodb_init_job_is_renamed_when_its_spec_changes(helm_home: Path) -> None:
    default = _init_job(template(helm_home))
    again = _init_job(template(helm_home))
    five = _init_job(template(helm_home, sets={"mongodb.replicas": "5"}))
    # Same spec, same name: an upgrade leaves a finished Job alone; a new
    # spec gets a new Job (a Job's pod template cannot be changed in place).
    assert default["metadata"]["name"] == again["metadata"]["name"]
    assert five["metadata"]["name"] != default["metadata"]["name"]
    env = {e["name"]: e for e in five["spec"]["template"]["spec"]["containers"][0]["env"]}
    members = env["MEMBERS"]["value"].split(",")
    assert members == [
        f"{RELEASE}-mongodb-{i}.{RELEASE}-mongodb-headless.relayq.svc:27017" for i in range(5)
    ]
    assert env["ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "mongodb-root-password"
    statefulset = template(helm_home).get("StatefulSet", f"{RELEASE}-mongodb")
    assert statefulset is not None
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--replSet=rs0" in args and "--keyFile=/keyfile/keyfile" in args


REDIS_TLS = {
    "redis.enabled": "false",
    "redis.external.url": "rediss://:pw@redis.example:6380/0?ssl_ca_certs=/etc/relayq/redis-tls/ca.crt",
    "redis.external.tls.caSecret": "redis-ca",
}


def test_external_redis_tls_mounts_the_ca_in_every_relayq_pod(helm_home: Path) -> None:
    # tests/integration/test_redis_tls.py connects to a TLS Redis with such a URL.
    render = template(helm_home, sets=REDIS_TLS)
    pods = {
        obj["metadata"]["name"]: pod
        for obj, pod in render.workloads()
        if obj["metadata"]["name"] != f"{RELEASE}-mongodb"
        and not obj["metadata"]["name"].startswith(f"{RELEASE}-mongodb-init")
    }
    assert {f"{RELEASE}-api", f"{RELEASE}-operator", f"{RELEASE}-recovery"} <= set(pods)
    for name, pod in pods.items():
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["redis-tls"]["secret"]["secretName"] == "redis-ca", name
        (container,) = pod["spec"]["containers"]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["redis-tls"]["mountPath"] == "/etc/relayq/redis-tls", name
        assert mounts["redis-tls"]["readOnly"] is True
    assert "redis-tls" not in str(template(helm_home).objects)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"redis.external.url": "redis://redis.example:6379/0"}, "must be rediss://"),
        ({"redis.enabled": "true"}, "for the in-cluster Redis set redis.tls.enabled"),
    ],
)
def test_external_redis_tls_refuses_what_it_cannot_do(
    helm_home: Path, change: dict[str, str], complaint: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(complaint)):
        template(helm_home, sets={**REDIS_TLS, **change})
