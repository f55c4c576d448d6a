"""TLS to the datastores in the chart: the in-cluster Redis, Sentinels and
MongoDB on TLS only (`redis.tls`, `mongodb.tls`), and the CA of an external
MongoDB (`mongodb.external.tls`). The rendered certificate is checked with
openssl against the names clients dial; tests/chart/test_redis_scripts.py runs
the rendered Redis scripts with TLS on real servers, and
tests/integration/test_{sentinel,mongo}_tls.py the clients."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from relayq.dev.servers import REPO_ROOT
from tests.chart.render import RELEASE, HelmError, Render, template

TLS_VALUES = REPO_ROOT / "deploy/helm/relayq/ci/06-datastore-tls-values.yaml"
NS = "relayq"
# Every relayq pod that opens both datastores; the operator opens Redis only.
CLIENTS = [
    "api", "worker-critical", "worker-high", "worker-medium", "worker-low", "worker-batch",
    "recovery", "reconcile",
]  # fmt: skip


@pytest.fixture(scope="module")
def tls(helm_home: Path) -> Render:
    return template(helm_home, [TLS_VALUES])


@pytest.fixture(scope="module")
def plain(helm_home: Path) -> Render:
    return template(helm_home, [REPO_ROOT / "deploy/helm/relayq/ci/01-default-values.yaml"])


def pod_of(render: Render, name: str) -> dict[str, Any]:
    for obj, pod in render.workloads():
        if obj["metadata"]["name"] == f"{RELEASE}-{name}":
            return pod
    raise AssertionError(f"no workload {name}")


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}


def mounts_of(c: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"].get("volumes") or []}


def secret_data(render: Render, name: str) -> dict[str, str]:
    secret = render.get("Secret", name)
    assert secret is not None, name
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def certificate_names(pem: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "cert.pem"
    path.write_text(pem)
    text = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return re.findall(r"(?:DNS|IP Address):([^,\s]+)", text)


def names_host(names: list[str], host: str) -> bool:
    """As a TLS client matches: exactly, or a `*.` wildcard for the first label only."""
    first, _, rest = host.partition(".")
    return any(n == host or (n.startswith("*.") and n[2:] == rest and first) for n in names)


def verify(ca: str, cert: str, tmp_path: Path, purpose: str) -> None:
    (tmp_path / "ca.pem").write_text(ca)
    (tmp_path / "leaf.pem").write_text(cert)
    done = subprocess.run(
        ["openssl", "verify", "-purpose", purpose, "-CAfile", str(tmp_path / "ca.pem"),
         str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- off: nothing changes ------------------------------------------------------


def test_without_tls_no_pod_mentions_it(plain: Render) -> None:
    # The Redis scripts read TLS_DIR, which no pod then sets.
    text = str([pod for _, pod in plain.workloads()])
    for word in ("redis-tls", "mongodb-tls", "TLS_DIR", "tlsMode", "RELAYQ_MONGO_TLS", "rediss://"):
        assert word not in text, word
    url = secret_data(plain, f"{RELEASE}-redis")["redis-url"]
    assert url.startswith("redis://")
    assert not [s for s in plain.names("Secret") if s.endswith("-tls")]


# -- the generated certificates -------------------------------------------------


def test_redis_certificate_names_every_host_clients_and_sentinels_dial(
    tls: Render, tmp_path: Path
) -> None:
    data = secret_data(tls, f"{RELEASE}-redis-tls")
    secret = tls.get("Secret", f"{RELEASE}-redis-tls")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    # Servers present it to clients, and to each other as replicas and Sentinels.
    verify(data["ca.crt"], data["tls.crt"], tmp_path, "sslserver")
    verify(data["ca.crt"], data["tls.crt"], tmp_path, "sslclient")
    names = certificate_names(data["tls.crt"], tmp_path)
    conn = secret_data(tls, f"{RELEASE}-redis")
    sentinels = [h.rpartition(":")[0] for h in conn["sentinels"].split(",")]
    # Sentinel names the master by the DNS name it announces (replica-announce-ip).
    nodes = [f"{RELEASE}-redis-{i}.{RELEASE}-redis-headless.{NS}.svc" for i in range(3)]
    for host in [*sentinels, *nodes, f"{RELEASE}-redis"]:
        assert names_host(names, host), (host, names)
    assert not names_host(names, f"{RELEASE}-mongodb-0.{RELEASE}-mongodb-headless.{NS}.svc")


def test_mongodb_certificate_names_every_member(tls: Render, tmp_path: Path) -> None:
    data = secret_data(tls, f"{RELEASE}-mongodb-tls")
    # Members present it to each other as clients too (requireTLS replication).
    verify(data["ca.crt"], data["tls.crt"], tmp_path, "sslserver")
    verify(data["ca.crt"], data["tls.crt"], tmp_path, "sslclient")
    names = certificate_names(data["tls.crt"], tmp_path)
    env = env_of(container(pod_of(tls, "api")))
    hosts = urlparse(env["RELAYQ_MONGO_URL"].replace("$(MONGODB_PASSWORD)", "pw")).netloc
    members = [h.rpartition(":")[0] for h in hosts.partition("@")[2].split(",")]
    assert len(members) == 3
    for host in members:
        assert names_host(names, host), (host, names)


def test_each_render_draws_a_new_ca_without_a_cluster(helm_home: Path, tls: Render) -> None:
    # Documented: `helm template` cannot look the installed Secret up; an
    # install or upgrade keeps the one in the cluster (lookup).
    again = template(helm_home, [TLS_VALUES])
    first = secret_data(tls, f"{RELEASE}-redis-tls")["ca.crt"]
    assert secret_data(again, f"{RELEASE}-redis-tls")["ca.crt"] != first


# -- the servers ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "port"), [("redis", "6379"), ("redis-sentinel", "26379")])
def test_redis_and_sentinels_serve_tls_from_the_secret_and_probe_over_tls(
    tls: Render, name: str, port: str
) -> None:
    pod = pod_of(tls, name)
    c = container(pod)
    assert env_of(c)["TLS_DIR"] == "/tls"
    assert mounts_of(c)["tls"] == "/tls"
    secret = volumes_of(pod)["tls"]["secret"]
    assert secret["secretName"] == f"{RELEASE}-redis-tls"
    assert {i["key"] for i in secret["items"]} == {"tls.crt", "tls.key", "ca.crt"}
    for probe in ("readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"][-1]
        assert "redis-cli --tls --cacert /tls/ca.crt" in command, command
        assert ("-p 26379" in command) == (port == "26379")
    assert pod["metadata"]["annotations"]["checksum/redis-tls"]


def test_the_scripts_move_both_ports_to_tls(tls: Render) -> None:
    scripts = tls.get("ConfigMap", f"{RELEASE}-redis-scripts")
    assert scripts is not None
    data = scripts["data"]
    assert '"port 0" "tls-port $1"' in data["tls.sh"]
    assert '"tls-replication yes"' in data["tls.sh"]
    for script in ("redis.sh", "sentinel.sh"):
        assert '. "$(dirname "$0")/tls.sh"' in data[script]
        assert "redis-cli $cli_tls" in data[script]


def test_mongod_requires_tls_and_its_probe_and_init_job_use_it(tls: Render) -> None:
    pod = pod_of(tls, "mongodb")
    mongod = container(pod)
    args = mongod["args"]
    for arg in (
        "--tlsMode=requireTLS",
        "--tlsCertificateKeyFile=/keyfile/server.pem",
        "--tlsCAFile=/tls/ca.crt",
        "--tlsAllowConnectionsWithoutCertificates",
    ):
        assert arg in args
    probe = mongod["readinessProbe"]["exec"]["command"]
    assert probe[:5] == ["mongosh", "--quiet", "--tls", "--tlsCAFile", "/tls/ca.crt"]
    (init,) = pod["spec"]["initContainers"]
    assert "cat /tls/tls.crt /tls/tls.key > /keyfile/server.pem" in init["command"][-1]
    assert mounts_of(init)["tls"] == "/tls"
    assert volumes_of(pod)["tls"]["secret"]["secretName"] == f"{RELEASE}-mongodb-tls"
    (job,) = [o for o in tls.of_kind("Job") if "mongodb-init" in o["metadata"]["name"]]
    job_pod = job["spec"]["template"]
    assert env_of(container(job_pod))["TLS_CA_FILE"] == "/tls/ca.crt"
    assert [i["key"] for i in volumes_of(job_pod)["tls"]["secret"]["items"]] == ["ca.crt"]
    scripts = tls.get("ConfigMap", f"{RELEASE}-mongodb-init")
    assert scripts is not None
    assert scripts["data"]["init.sh"].count("mongosh --quiet $tls") == 3


# -- the clients ------------------------------------------------------------------


def test_every_client_trusts_the_ca_and_never_mounts_a_key(tls: Render) -> None:
    url = secret_data(tls, f"{RELEASE}-redis")["redis-url"]
    parsed = urlparse(url)
    assert parsed.scheme == "rediss"
    query = parse_qs(parsed.query)
    assert query["ssl_ca_certs"] == ["/etc/relayq/redis-tls/ca.crt"]
    assert query["ssl_check_hostname"] == ["true"]
    for name in [*CLIENTS, "operator"]:
        pod = pod_of(tls, name)
        c = container(pod)
        mounts, volumes = mounts_of(c), volumes_of(pod)
        assert mounts["redis-tls"] == "/etc/relayq/redis-tls", name
        assert volumes["redis-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        notes = pod["metadata"]["annotations"]
        assert notes["checksum/redis-tls"], name
        if name == "operator":
            assert "mongodb-tls" not in volumes
            continue
        assert env_of(c)["RELAYQ_MONGO_TLS_CA_FILE"] == "/etc/relayq/mongodb-tls/ca.crt", name
        assert mounts["mongodb-tls"] == "/etc/relayq/mongodb-tls", name
        assert volumes["mongodb-tls"]["secret"]["secretName"] == f"{RELEASE}-mongodb-tls"
        assert volumes["mongodb-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        assert notes["checksum/mongodb-tls"], name
    # The servers' keys reach the servers only.
    for obj, pod in tls.workloads():
        for volume in pod["spec"].get("volumes") or []:
            items = (volume.get("secret") or {}).get("items") or []
            if any(i["key"] == "tls.key" for i in items):
                assert obj["metadata"]["name"] in {
                    f"{RELEASE}-redis",
                    f"{RELEASE}-redis-sentinel",
                    f"{RELEASE}-mongodb",
                }, obj["metadata"]["name"]


def test_every_pod_agrees_on_the_checksum_of_a_generated_secret(tls: Render) -> None:
    seen: dict[str, set[str]] = {}
    for _, pod in tls.workloads():
        for key, value in (pod["metadata"].get("annotations") or {}).items():
            if key.endswith("-tls"):
                seen.setdefault(key, set()).add(value)
    assert set(seen) == {"checksum/redis-tls", "checksum/mongodb-tls"}
    assert all(len(values) == 1 for values in seen.values()), seen


def test_existing_secrets_are_used_and_none_is_generated(helm_home: Path) -> None:
    render = template(
        helm_home,
        [TLS_VALUES],
        sets={
            "redis.tls.existingSecret": "my-redis-tls",
            "mongodb.tls.existingSecret": "my-db-tls",
        },
    )
    assert render.get("Secret", f"{RELEASE}-redis-tls") is None
    assert render.get("Secret", f"{RELEASE}-mongodb-tls") is None
    assert volumes_of(pod_of(render, "redis"))["tls"]["secret"]["secretName"] == "my-redis-tls"
    assert volumes_of(pod_of(render, "mongodb"))["tls"]["secret"]["secretName"] == "my-db-tls"
    api = volumes_of(pod_of(render, "api"))
    assert api["redis-tls"]["secret"]["secretName"] == "my-redis-tls"
    assert api["mongodb-tls"]["secret"]["secretName"] == "my-db-tls"


EXTERNAL_MONGO_TLS = {
    "mongodb.enabled": "false",
    "mongodb.external.url": "mongodb://u:p@db.example:27017/?replicaSet=rs0",
    "mongodb.external.tls.caSecret": "db-ca",
}


def test_an_external_mongodb_ca_and_client_certificate_reach_every_client(
    helm_home: Path,
) -> None:
    render = template(
        helm_home, sets={**EXTERNAL_MONGO_TLS, "mongodb.external.tls.clientSecret": "db-client"}
    )
    for name in ("api", "worker-high", "recovery"):
        pod = pod_of(render, name)
        env = env_of(container(pod))
        assert env["RELAYQ_MONGO_TLS_CA_FILE"] == "/etc/relayq/mongodb-tls/ca.crt"
        assert (
            env["RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE"] == "/etc/relayq/mongodb-client-tls/tls.pem"
        )
        volumes = volumes_of(pod)
        assert volumes["mongodb-tls"]["secret"]["secretName"] == "db-ca"
        assert volumes["mongodb-client-tls"]["secret"]["secretName"] == "db-client"
        assert mounts_of(container(pod))["mongodb-client-tls"] == "/etc/relayq/mongodb-client-tls"
        assert "checksum/mongodb-tls" in pod["metadata"]["annotations"]
    # The in-cluster Redis stays plain here; the operator opens no MongoDB.
    assert "mongodb-tls" not in volumes_of(pod_of(render, "operator"))


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({**EXTERNAL_MONGO_TLS, "mongodb.enabled": "true"}, "set mongodb.tls.enabled"),
        (
            {"mongodb.enabled": "false", "mongodb.external.url": "mongodb://db.example/",
             "mongodb.external.tls.clientSecret": "db-client"},
            "clientSecret needs mongodb.external.tls.caSecret",
        ),
        ({"redis.tls.validityDays": "0"}, "validityDays"),
        ({"mongodb.tls.certificate": "x"}, "certificate"),
    ],
)  # fmt: skip
def test_tls_values_that_cannot_work_are_refused(
    helm_home: Path, sets: dict[str, str], complaint: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(complaint)):
        template(helm_home, sets=sets)


def test_external_redis_tls_through_sentinel_is_accepted(helm_home: Path) -> None:
    render = template(
        helm_home,
        sets={
            "redis.enabled": "false",
            "redis.external.url": "rediss://:pw@r.example:6379/0?ssl_ca_certs=/etc/relayq/redis-tls/ca.crt",
            "redis.external.sentinels[0]": "s1.example:26379",
            "redis.external.tls.caSecret": "redis-ca",
        },
    )
    conn = secret_data(render, f"{RELEASE}-redis-external")
    assert conn["sentinels"] == "s1.example:26379"
    assert volumes_of(pod_of(render, "operator"))["redis-tls"]["secret"]["secretName"] == "redis-ca"
