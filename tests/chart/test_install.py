"""The chart on a real control plane (KWOK runs the pods): install, upgrade, uninstall.

The namespace enforces the `restricted` Pod Security Standard, so the API
server itself refuses any pod of the chart that is not locked down.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.chart.render import CHART, CI_VALUES, RELEASE, run_helm, value_args

if TYPE_CHECKING:
    from tests.kube.cluster import KubeCluster

NAMESPACE = "relayq"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
DEFAULT_VALUES = next(p for p in CI_VALUES if p.name.startswith("01-"))
MINIMAL_VALUES = next(p for p in CI_VALUES if p.name.startswith("04-"))
EXTERNAL_VALUES = next(p for p in CI_VALUES if p.name.startswith("02-"))
WAIT = "90s"
# In-cluster Redis and MongoDB claim volumes; nothing provisions them here, so
# the test offers PersistentVolumes for the claims to bind (KWOK never mounts them).
VOLUMES = 6


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


class Cluster:
    """The API clients and Helm arguments one install test uses."""

    def __init__(self, kube: KubeCluster, helm_home: Path) -> None:
        from kubernetes import client

        self.kube = kube
        self.home = helm_home
        # Any: the tests read optional fields the API server always fills in here.
        self.api = kube.api_client()
        self.core: Any = client.CoreV1Api(self.api)
        self.apps: Any = client.AppsV1Api(self.api)
        self.batch: Any = client.BatchV1Api(self.api)
        self.custom: Any = client.CustomObjectsApi(self.api)
        self.ext: Any = client.ApiextensionsV1Api(self.api)

    def helm(self, *args: str, timeout: float = 180) -> str:
        return run_helm(list(args), self.home, self.kube.kubeconfig_path, timeout=timeout)

    def create_namespace(self, name: str) -> None:
        labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        self.core.create_namespace({"metadata": {"name": name, "labels": labels}})

    def offer_volumes(self) -> None:
        for i in range(VOLUMES):
            self.core.create_persistent_volume(
                {
                    "metadata": {"name": f"relayq-test-pv-{i}", "labels": {"relayq-test": "pv"}},
                    "spec": {
                        "capacity": {"storage": "50Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "local": {"path": f"/var/lib/relayq-test/{i}"},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "type",
                                                "operator": "In",
                                                "values": ["kwok"],
                                            }
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                }
            )

    def available(self, namespace: str) -> bool:
        """Every Deployment and StatefulSet of the release has all its replicas ready."""
        deployments = self.apps.list_namespaced_deployment(namespace, label_selector=SELECTOR)
        sets = self.apps.list_namespaced_stateful_set(namespace, label_selector=SELECTOR)
        items = [*deployments.items, *sets.items]
        return bool(items) and all(
            (o.status.ready_replicas or 0) == o.spec.replicas
            and (o.status.updated_replicas or 0) == o.spec.replicas
            for o in items
        )

    def release_objects(self, namespace: str) -> list[str]:
        """Every namespaced object carrying the release's instance label."""
        from kubernetes import client

        found: list[str] = []
        rbac = client.RbacAuthorizationV1Api(self.api)
        net = client.NetworkingV1Api(self.api)
        policy = client.PolicyV1Api(self.api)
        listers: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.list_namespaced_deployment,
            "StatefulSet": self.apps.list_namespaced_stateful_set,
            "ReplicaSet": self.apps.list_namespaced_replica_set,
            "Pod": self.core.list_namespaced_pod,
            "Service": self.core.list_namespaced_service,
            "ConfigMap": self.core.list_namespaced_config_map,
            "Secret": self.core.list_namespaced_secret,
            "ServiceAccount": self.core.list_namespaced_service_account,
            "PersistentVolumeClaim": self.core.list_namespaced_persistent_volume_claim,
            "CronJob": self.batch.list_namespaced_cron_job,
            "Job": self.batch.list_namespaced_job,
            "Role": rbac.list_namespaced_role,
            "RoleBinding": rbac.list_namespaced_role_binding,
            "NetworkPolicy": net.list_namespaced_network_policy,
            "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget,
        }
        for kind, lister in listers.items():
            for item in lister(namespace, label_selector=SELECTOR).items:
                found.append(f"{kind}/{item.metadata.name}")
        scalers = self.custom.list_namespaced_custom_object(
            "relayq.io", "v1alpha1", namespace, "workerautoscalers", label_selector=SELECTOR
        )
        found += [f"WorkerAutoscaler/{s['metadata']['name']}" for s in scalers["items"]]
        return found


@pytest.fixture(scope="module")
def cluster(kube_cluster: KubeCluster, helm_home: Path) -> Iterator[Cluster]:
    c = Cluster(kube_cluster, helm_home)
    yield c
    c.api.close()


@pytest.fixture(scope="module")
def default_install(cluster: Cluster) -> Iterator[float]:
    """The default values installed with --wait; yields the seconds it took."""
    cluster.create_namespace(NAMESPACE)
    cluster.offer_volumes()
    started = time.monotonic()
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
        *value_args([DEFAULT_VALUES]), "--wait", "--timeout", WAIT,
    )  # fmt: skip
    yield time.monotonic() - started
    # Tests below uninstall; this only cleans up after a failure.
    cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--ignore-not-found")


def _secret(cluster: Cluster, name: str) -> dict[str, str]:
    data = cluster.core.read_namespaced_secret(name, NAMESPACE).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


class TestDefaultInstall:
    """In order: install, check, upgrade, uninstall (one release, one namespace)."""

    def test_install_waits_until_every_workload_is_available(
        self, cluster: Cluster, default_install: float
    ) -> None:
        assert cluster.available(NAMESPACE)
        status = cluster.helm("status", RELEASE, "--namespace", NAMESPACE)
        assert "STATUS: deployed" in status
        deployments = {
            d.metadata.name
            for d in cluster.apps.list_namespaced_deployment(
                NAMESPACE, label_selector=SELECTOR
            ).items
        }
        workers = {f"{RELEASE}-worker-{p}" for p in ("critical", "high", "medium", "low", "batch")}
        assert {f"{RELEASE}-api", f"{RELEASE}-operator"} | workers == deployments
        sets = {
            s.metadata.name: s.status.ready_replicas
            for s in cluster.apps.list_namespaced_stateful_set(
                NAMESPACE, label_selector=SELECTOR
            ).items
        }
        assert sets == {
            f"{RELEASE}-redis": 3,
            f"{RELEASE}-redis-sentinel": 3,
            f"{RELEASE}-mongodb": 3,
        }

    def test_notes_describe_what_was_installed(
        self, cluster: Cluster, default_install: float
    ) -> None:
        notes = cluster.helm("get", "notes", RELEASE, "--namespace", NAMESPACE)
        assert "Workers: critical, high, medium, low, batch" in notes
        assert "watched by 3 Sentinels" in notes
        assert "relayer (relayer.enabled)" in notes  # listed under "Off"
        assert f"get secret {RELEASE}-auth" in notes

    def test_worker_autoscalers_exist_for_every_worker(
        self, cluster: Cluster, default_install: float
    ) -> None:
        scalers = cluster.custom.list_namespaced_custom_object(
            "relayq.io", "v1alpha1", NAMESPACE, "workerautoscalers"
        )["items"]
        targets = {s["spec"]["priority"]: s["spec"]["scaleTargetRef"]["name"] for s in scalers}
        assert targets == {p: f"{RELEASE}-worker-{p}" for p in targets}
        assert set(targets) == {"critical", "high", "medium", "low", "batch"}
        # The Secret they name holds what the operator reads.
        keys = set(_secret(cluster, scalers[0]["spec"]["redis"]["secretRef"]["name"]))
        assert {"redis-url", "sentinels", "master-name", "redis-password"} <= keys
        # The API server applied the CRD's defaults and kept the spec.
        assert all(s["spec"]["paused"] is False for s in scalers)

    def test_mongodb_init_job_runs_to_completion(
        self, cluster: Cluster, default_install: float
    ) -> None:
        def completed() -> bool:
            jobs = cluster.batch.list_namespaced_job(
                NAMESPACE, label_selector=f"{SELECTOR},app.kubernetes.io/component=mongodb-init"
            ).items
            return len(jobs) == 1 and (jobs[0].status.succeeded or 0) == 1

        _until(completed, 30, "the MongoDB init Job to complete")

    def test_a_job_created_from_the_recovery_cronjob_runs(
        self, cluster: Cluster, default_install: float
    ) -> None:
        from kubernetes import client

        name = f"{RELEASE}-recovery"
        cron = cluster.batch.read_namespaced_cron_job(name, NAMESPACE)
        assert cron.spec.concurrency_policy == "Forbid"
        # What `kubectl create job --from=cronjob/...` does.
        job = client.V1Job(
            metadata=client.V1ObjectMeta(
                name=f"{name}-manual",
                labels=cron.spec.job_template.metadata.labels,
                owner_references=[
                    client.V1OwnerReference(
                        api_version="batch/v1", kind="CronJob", name=name, uid=cron.metadata.uid
                    )
                ],
            ),
            spec=cron.spec.job_template.spec,
        )
        cluster.batch.create_namespaced_job(NAMESPACE, job)

        def succeeded() -> bool:
            found = cluster.batch.read_namespaced_job(f"{name}-manual", NAMESPACE)
            return (found.status.succeeded or 0) == 1

        _until(succeeded, 30, "the recovery Job to succeed")
        pods = cluster.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"job-name={name}-manual"
        ).items
        assert len(pods) == 1
        registry = yaml.safe_load(DEFAULT_VALUES.read_text())["image"]["registry"]
        assert pods[0].spec.containers[0].image.startswith(f"{registry}/relayq/recovery:")

    def test_upgrade_with_changed_env_rolls_the_api_and_keeps_secrets(
        self, cluster: Cluster, default_install: float
    ) -> None:
        api_name = f"{RELEASE}-api"
        before = cluster.apps.read_namespaced_deployment(api_name, NAMESPACE)
        secrets_before = {
            n: _secret(cluster, n)
            for n in (f"{RELEASE}-auth", f"{RELEASE}-redis", f"{RELEASE}-mongodb")
        }
        cluster.helm(
            "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
            *value_args([DEFAULT_VALUES], {"api.rateLimitPerSecond": "123"}),
            "--wait", "--timeout", WAIT,
        )  # fmt: skip
        after = cluster.apps.read_namespaced_deployment(api_name, NAMESPACE)
        assert after.metadata.generation > before.metadata.generation
        env = {e.name: e.value for e in after.spec.template.spec.containers[0].env}
        assert env["RELAYQ_API_RATE_LIMIT"] == "123"

        def rolled() -> bool:
            sets = cluster.apps.list_namespaced_replica_set(
                NAMESPACE, label_selector=f"{SELECTOR},app.kubernetes.io/component=api"
            ).items
            current = [s for s in sets if (s.spec.replicas or 0) > 0]
            return len(sets) == 2 and len(current) == 1 and current[0].status.ready_replicas == 2

        _until(rolled, 30, "a new api ReplicaSet to take over")
        # Generated passwords and keys survive the upgrade (the chart looks them up).
        for name, data in secrets_before.items():
            assert _secret(cluster, name) == data, name

    def test_uninstall_leaves_nothing_but_the_crd_and_data_volumes(
        self, cluster: Cluster, default_install: float
    ) -> None:
        cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", WAIT)

        def only_claims_left() -> list[str] | None:
            left = cluster.release_objects(NAMESPACE)
            return None if any(not o.startswith("PersistentVolumeClaim/") for o in left) else left

        left = _until(only_claims_left, 60, "the release's objects to go")
        # StatefulSet claims are kept on purpose (the data outlives a release), as is
        # the CRD: Helm never deletes CRDs it installed from crds/.
        assert sorted(left) == sorted(
            [f"PersistentVolumeClaim/data-{RELEASE}-redis-{i}" for i in range(3)]
            + [f"PersistentVolumeClaim/data-{RELEASE}-mongodb-{i}" for i in range(3)]
        )
        assert cluster.ext.read_custom_resource_definition("workerautoscalers.relayq.io")
        assert "not found" in _helm_status_error(cluster)


def _helm_status_error(cluster: Cluster) -> str:
    from tests.chart.render import HelmError

    try:
        cluster.helm("status", RELEASE, "--namespace", NAMESPACE)
    except HelmError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("values", [MINIMAL_VALUES, EXTERNAL_VALUES], ids=lambda p: p.name)
def test_other_setups_install_and_uninstall_cleanly(cluster: Cluster, values: Path) -> None:
    namespace = f"relayq-{values.name[:2]}"
    cluster.create_namespace(namespace)
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", namespace,
        *value_args([values]), "--wait", "--timeout", WAIT,
    )  # fmt: skip
    try:
        assert cluster.available(namespace)
        notes = cluster.helm("get", "notes", RELEASE, "--namespace", namespace)
        if values == MINIMAL_VALUES:
            assert "Workers: critical, batch" in notes
            assert "Autoscaling: OFF" in notes and "recovery CronJob (recovery.enabled)" in notes
            assert "NO persistent volume" in notes
        else:
            assert "Redis: external (Sentinels sentinel-a.example.internal:26379," in notes
            assert "MongoDB: external (URL from mongodb.external.url)" in notes
    finally:
        cluster.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", WAIT)
    _until(lambda: not cluster.release_objects(namespace), 60, "the release's objects to go")


def test_generated_tls_certificates_survive_an_upgrade(cluster: Cluster) -> None:
    # Each `helm template` draws a new CA (tests/chart/test_datastore_tls.py);
    # installed, the chart reads its certificates back, so an upgrade keeps
    # them and rolls nothing for their sake.
    namespace = "relayq-tls"
    values = [next(p for p in CI_VALUES if p.name.startswith("06-"))]
    sets = {"redis.persistence.enabled": "false", "mongodb.persistence.enabled": "false"}
    names = [f"{RELEASE}-redis-tls", f"{RELEASE}-mongodb-tls"]
    cluster.create_namespace(namespace)

    def state() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        secrets = {}
        for name in names:
            data = cluster.core.read_namespaced_secret(name, namespace).data or {}
            secrets[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        api = cluster.apps.read_namespaced_deployment(f"{RELEASE}-api", namespace)
        notes = api.spec.template.metadata.annotations or {}
        return secrets, {k: v for k, v in notes.items() if k.endswith("-tls")}

    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", namespace, *value_args(values, sets)
    )
    try:
        secrets, checksums = state()
        assert set(checksums) == {"checksum/redis-tls", "checksum/mongodb-tls"}
        assert all("BEGIN CERTIFICATE" in s["ca.crt"] for s in secrets.values())
        notes = cluster.helm("get", "notes", RELEASE, "--namespace", namespace)
        assert notes.count(", TLS only") == 2, notes
        cluster.helm(
            "upgrade", RELEASE, str(CHART), "--namespace", namespace,
            *value_args(values, {**sets, "api.rateLimitPerSecond": "123"}),
        )  # fmt: skip
        assert state() == (secrets, checksums)
    finally:
        cluster.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", WAIT)
