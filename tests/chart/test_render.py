"""Every ci/ values file renders to valid, consistent Kubernetes objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relayq.api.app import operations
from tests.chart.checks import (
    CUSTOM_KINDS,
    PRIORITIES,
    configmap_keys,
    containers,
    existing_secrets,
    pods_selected,
    secret_keys,
    selector_matches,
    validate_core,
    validate_workerautoscaler,
)
from tests.chart.render import CHART, CI_VALUES, RELEASE, Render, run_helm, value_args


def test_ci_values_files_are_numbered_and_cover_the_main_setups() -> None:
    names = [p.name for p in CI_VALUES]
    assert names[0] == "01-default-values.yaml"
    assert len(names) >= 4 and len({n[:2] for n in names}) == len(names)


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_chart_lints_strictly(values: Path, helm_home: Path) -> None:
    out = run_helm(["lint", "--strict", str(CHART), *value_args([values])], helm_home)
    assert "0 chart(s) failed" in out


def test_every_object_is_valid_for_the_cluster_version(ci_render: Render) -> None:
    kinds = set()
    for obj in ci_render.objects:
        kinds.add(obj["kind"])
        if obj["kind"] == "WorkerAutoscaler":
            validate_workerautoscaler(obj)
        elif obj["kind"] not in CUSTOM_KINDS:
            validate_core(obj)
    assert {"ConfigMap", "Secret", "ServiceAccount"} & kinds


def test_every_object_carries_the_release_labels(ci_render: Render) -> None:
    for obj in ci_render.objects:
        if obj["kind"] == "CustomResourceDefinition":
            continue
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name") == "relayq"


def test_workload_selectors_match_their_pod_labels(ci_render: Render) -> None:
    for obj, pod in ci_render.workloads():
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            assert selector_matches(obj["spec"]["selector"], pod["metadata"]["labels"])
            # No other workload's pods fall under this selector.
            assert len(pods_selected(ci_render, obj["spec"]["selector"])) == 1
    for pdb in ci_render.of_kind("PodDisruptionBudget"):
        assert pods_selected(ci_render, pdb["spec"]["selector"])
    for policy in ci_render.of_kind("NetworkPolicy"):
        assert pods_selected(ci_render, policy["spec"]["podSelector"])


def test_services_select_pods_and_target_their_container_ports(ci_render: Render) -> None:
    for svc in ci_render.of_kind("Service"):
        pods = pods_selected(ci_render, {"matchLabels": svc["spec"]["selector"]})
        assert len(pods) == 1, svc["metadata"]["name"]
        ports = {
            p.get("name"): p["containerPort"]
            for c in pods[0]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), (svc["metadata"]["name"], target)


def _check_secret_ref(render: Render, name: str, key: str | None, optional: bool) -> None:
    allowed = existing_secrets(render.values)
    keys = secret_keys(render, name)
    if keys is None:
        assert name in allowed, f"Secret {name} is neither rendered nor named in values"
    elif key is not None and not optional:
        assert key in keys, f"Secret {name} has no key {key}"


def _check_configmap_ref(render: Render, name: str, key: str | None) -> None:
    keys = configmap_keys(render, name)
    assert keys is not None, f"ConfigMap {name} is not rendered"
    assert key is None or key in keys, f"ConfigMap {name} has no key {key}"


def test_every_referenced_secret_and_configmap_exists(ci_render: Render) -> None:
    for _, pod in ci_render.workloads():
        for container in containers(pod):
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    _check_secret_ref(
                        ci_render, ref["name"], ref["key"], ref.get("optional", False)
                    )
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    _check_configmap_ref(ci_render, ref["name"], ref["key"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    _check_secret_ref(ci_render, source["secretRef"]["name"], None, False)
                if "configMapRef" in source:
                    _check_configmap_ref(ci_render, source["configMapRef"]["name"], None)
        for volume in pod["spec"].get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"].get("items", [{"key": None}]):
                    _check_secret_ref(ci_render, volume["secret"]["secretName"], item["key"], False)
            if "configMap" in volume:
                for item in volume["configMap"].get("items", [{"key": None}]):
                    _check_configmap_ref(ci_render, volume["configMap"]["name"], item["key"])
        for secret in pod["spec"].get("imagePullSecrets", []):
            assert secret["name"]


def test_every_volume_mount_has_a_volume(ci_render: Render) -> None:
    for obj, pod in ci_render.workloads():
        volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
        claims = {
            t["metadata"]["name"] for t in obj.get("spec", {}).get("volumeClaimTemplates", [])
        }
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes | claims, (obj["metadata"]["name"], mount["name"])


def _api_paths() -> set[str]:
    return {op.path for op in operations(()) if op.method == "GET"}


def test_probes_point_at_real_endpoints_and_named_ports(ci_render: Render) -> None:
    api_paths = _api_paths()
    for obj, pod in ci_render.workloads():
        for container in containers(pod):
            names = {p["name"] for p in container.get("ports", [])}
            for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if not probe or "httpGet" not in probe:
                    continue
                assert probe["httpGet"]["port"] in names
                if obj["metadata"]["name"].endswith("-api"):
                    assert probe["httpGet"]["path"] in api_paths
    api = ci_render.get("Deployment", f"{RELEASE}-api")
    if api is not None:
        container = api["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # /metrics is not on the public port: only on the metrics port, which the
        # API is told of (relayq.api.metrics).
        assert "/metrics" not in api_paths
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        values = ci_render.values["api"]
        assert ports == {"http": values["containerPort"], "metrics": values["metricsPort"]}
        assert env["RELAYQ_API_PORT"] == str(values["containerPort"])
        assert env["RELAYQ_API_METRICS_PORT"] == str(values["metricsPort"])
        assert ports["http"] != ports["metrics"]


def _pod_security(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    own = container.get("securityContext", {})
    return own[key] if key in own else pod["spec"].get("securityContext", {}).get(key)


def test_every_container_runs_locked_down(ci_render: Render) -> None:
    for obj, pod in ci_render.workloads():
        for container in containers(pod):
            where = f"{obj['metadata']['name']}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert _pod_security(pod, container, "runAsNonRoot") is True, where
            user = _pod_security(pod, container, "runAsUser")
            assert isinstance(user, int) and user > 0, where
            seccomp = _pod_security(pod, container, "seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts or obj["kind"] == "Job" or container["name"] == "keyfile", where
            assert container.get("resources", {}).get("requests"), where


def _enabled_priorities(render: Render) -> list[str]:
    return [p for p in PRIORITIES if render.values["workers"]["priorities"][p]["enabled"]]


def test_one_worker_deployment_per_enabled_priority(ci_render: Render) -> None:
    enabled = _enabled_priorities(ci_render)
    deployments = {
        name.removeprefix(f"{RELEASE}-worker-")
        for name in ci_render.names("Deployment")
        if name.startswith(f"{RELEASE}-worker-")
    }
    assert deployments == set(enabled)
    config = ci_render.get("ConfigMap", f"{RELEASE}-config")
    assert config is not None
    drain = float(config["data"]["RELAYQ_DRAIN_SECONDS"])
    for priority in enabled:
        deployment = ci_render.get("Deployment", f"{RELEASE}-worker-{priority}")
        assert deployment is not None
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"] == ["--priority", priority]
        assert pod["terminationGracePeriodSeconds"] > drain
        concurrency = ci_render.values["workers"]["priorities"][priority]["concurrency"]
        assert config["data"][f"RELAYQ_{priority.upper()}_CONCURRENCY"] == str(concurrency)


def test_worker_autoscaler_per_enabled_priority_targets_its_deployment(ci_render: Render) -> None:
    values = ci_render.values
    autoscaled = values["operator"]["enabled"] and values["workers"]["autoscaling"]["enabled"]
    scalers = ci_render.of_kind("WorkerAutoscaler")
    if not autoscaled:
        assert scalers == []
        for priority in _enabled_priorities(ci_render):
            deployment = ci_render.get("Deployment", f"{RELEASE}-worker-{priority}")
            assert deployment is not None and deployment["spec"]["replicas"] >= 1
        return
    assert sorted(s["spec"]["priority"] for s in scalers) == sorted(_enabled_priorities(ci_render))
    for scaler in scalers:
        spec = scaler["spec"]
        target = ci_render.get("Deployment", spec["scaleTargetRef"]["name"])
        assert target is not None
        assert "replicas" not in target["spec"], "the operator owns the replicas"
        assert target["spec"]["template"]["spec"]["containers"][0]["args"][1] == spec["priority"]
        assert spec["keyPrefix"] == values["config"]["keyPrefix"]
        ref = spec["redis"]["secretRef"]
        _check_secret_ref(ci_render, ref["name"], ref["key"], False)
        for key in spec["redis"].get("sentinel", {}).values():
            _check_secret_ref(ci_render, ref["name"], key, False)
        assert spec["minReplicas"] <= spec["maxReplicas"]


def test_operator_rbac_is_the_shared_rule_file(ci_render: Render) -> None:
    import yaml

    if not ci_render.values["operator"]["enabled"]:
        assert not ci_render.of_kind("Role") and not ci_render.of_kind("ClusterRole")
        return
    rules = yaml.safe_load((CHART / "files" / "operator-rbac.yaml").read_text())
    kind = "ClusterRole" if ci_render.values["operator"]["clusterWide"] else "Role"
    (role,) = ci_render.of_kind(kind)
    # The shared rules, then `get` on the Secrets the WorkerAutoscalers name, by name only.
    *shared, secrets = role["rules"]
    assert shared == rules
    assert secrets["resources"] == ["secrets"] and secrets["verbs"] == ["get"]
    named = {a["spec"]["redis"]["secretRef"]["name"] for a in ci_render.of_kind("WorkerAutoscaler")}
    assert named <= set(secrets["resourceNames"])
    assert secrets["resourceNames"] == [_redis_secret_name(ci_render)]
    for rule in role["rules"]:
        if "secrets" in rule["resources"] or "*" in rule["resources"]:
            assert rule.get("resourceNames"), "Secrets only by name"
    (binding,) = ci_render.of_kind(f"{kind}Binding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    operator = ci_render.get("Deployment", f"{RELEASE}-operator")
    assert operator is not None
    account = operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "relayq"}
    ]
    assert ci_render.get("ServiceAccount", account) is not None
    # Only the operator talks to the Kubernetes API.
    for obj, pod in ci_render.workloads():
        if obj is not operator:
            assert pod["spec"].get("automountServiceAccountToken") is False


def _cronjob(render: Render, component: str) -> dict[str, Any] | None:
    return render.get("CronJob", f"{RELEASE}-{component}")


def test_recovery_cronjob_never_overlaps(ci_render: Render) -> None:
    cron = _cronjob(ci_render, "recovery")
    if not ci_render.values["recovery"]["enabled"]:
        assert cron is None
        return
    assert cron is not None
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["image"].split(":")[0].endswith("relayq/recovery")


def test_reconcile_cronjob_runs_with_the_relayers_settings_when_it_is_enabled(
    ci_render: Render,
) -> None:
    cron = _cronjob(ci_render, "reconcile")
    values = ci_render.values
    if not (values["relayer"]["enabled"] and values["reconcile"]["enabled"]):
        assert cron is None
        return
    assert cron is not None
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == values["reconcile"]["schedule"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"].split(":")[0].endswith("relayq/worker")
    assert container["command"] == ["relayq", "reconcile"]
    window, settle = values["reconcile"]["windowSeconds"], values["reconcile"]["settleSeconds"]
    assert container["args"] == ["--window", str(window), "--settle", str(settle)]
    env = {e["name"] for e in container["env"]}
    assert {"RELAYQ_SIGNER_URL", "RELAYQ_BASKETS_FILE", "RELAYQ_MONGO_URL"} <= env
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/relayq/signer-token" in mounts and "/etc/relayq/relayer" not in mounts
    config = ci_render.get("ConfigMap", container["envFrom"][0]["configMapRef"]["name"])
    assert config is not None and "RELAYQ_CONTRACT_OWNER" in config["data"]


def _redis_secret_name(render: Render) -> str:
    redis = render.values["redis"]
    if redis["enabled"]:
        return str(redis["auth"]["existingSecret"] or f"{RELEASE}-redis")
    return str(redis["external"]["existingSecret"] or f"{RELEASE}-redis-external")


def test_only_the_signer_mounts_the_relayers_key(ci_render: Render) -> None:
    if not ci_render.values["relayer"]["enabled"]:
        assert ci_render.get("Deployment", f"{RELEASE}-signer") is None
        return
    key = {"relayer-keypair"}
    mounting = set()
    for kind in ("Deployment", "StatefulSet", "CronJob", "Job"):
        for doc in ci_render.of_kind(kind):
            spec = doc["spec"]
            if kind == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            pod = spec["template"]["spec"]
            secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            names = {v["name"] for v in pod.get("volumes", [])}
            env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
            if names & key or "RELAYQ_RELAYER_KEYPAIR_FILE" in env:
                mounting.add(doc["metadata"]["name"])
            elif doc["metadata"]["name"] != f"{RELEASE}-signer":
                assert not any(s.endswith("relayer-keypair") or s == "relayq-relayer"
                               for s in secrets), doc["metadata"]["name"]  # fmt: skip
    assert mounting == {f"{RELEASE}-signer"}
    policy = ci_render.get("NetworkPolicy", f"{RELEASE}-signer")
    if ci_render.values["networkPolicy"]["enabled"]:
        assert policy is not None
        (rule,) = policy["spec"]["ingress"]
        sources = [
            peer["podSelector"]["matchLabels"] for peer in rule["from"] if "podSelector" in peer
        ]
        admitted = {
            s.get("app.kubernetes.io/component") or s.get("relayq.io/role") for s in sources
        }
        assert admitted == {"api", "worker", "reconcile"}  # and Prometheus, where it is named
    assert ci_render.get("Ingress", f"{RELEASE}-signer") is None
