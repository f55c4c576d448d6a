"""Secrets in the chart: a changed Secret rolls the pods that read it, and the
MongoDB root password never appears in a process's arguments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.render import RELEASE, Render, template

# Every generated value given, so two renders differ only where a test changes one.
FIXED = {
    "auth.apiKey": "api-key-1",
    "auth.adminToken": "admin-token-1",
    "redis.auth.password": "redis-pw-1",
    "mongodb.auth.rootPassword": "R00t-pw-never-in-argv",
    "mongodb.auth.password": "mongo-pw-1",
    "mongodb.auth.replicaSetKey": "cmVwbGljYXNldGtleTE=",
    "relayer.enabled": "true",
    "relayer.contractOwner": "AEqFwvZ73UTPQSYvn97cy3fFCygZzx6rQiF7pnwsBK3A",
    "relayer.keypair.json": "[1]",
    "relayer.signer.token": "signer-token-1",
    "networkPolicy.relayerEgress.to[0].ipBlock.cidr": "203.0.113.0/24",
}
RELAYQ_PODS = ["api", "worker-critical", "worker-batch"]


def pod_annotations(render: Render, kind: str, name: str) -> dict[str, str]:
    obj = render.get(kind, name)
    assert obj is not None, name
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"])
    return dict(obj["spec"]["template"]["metadata"].get("annotations") or {})


def checksums(render: Render) -> dict[str, dict[str, str]]:
    """checksum/* annotations of each pod template, by workload name."""
    found = {}
    for obj, pod in render.workloads():
        notes = pod["metadata"].get("annotations") or {}
        found[obj["metadata"]["name"]] = {
            k: v for k, v in notes.items() if k.startswith("checksum/")
        }
    return found


@pytest.fixture(scope="module")
def base(helm_home: Path) -> dict[str, dict[str, str]]:
    return checksums(template(helm_home, sets=FIXED))


def changed(
    helm_home: Path, base: dict[str, dict[str, str]], key: str, value: str
) -> dict[str, set[str]]:
    """For each workload, the checksum annotations that differ after one value changes."""
    after = checksums(template(helm_home, sets={**FIXED, key: value}))
    return {
        name: {k for k in notes if base[name].get(k) != notes[k]} for name, notes in after.items()
    }


def test_renders_with_the_same_values_have_the_same_checksums(
    helm_home: Path, base: dict[str, dict[str, str]]
) -> None:
    assert checksums(template(helm_home, sets=FIXED)) == base


@pytest.mark.parametrize(
    ("key", "value", "annotation", "rolled"),
    [
        ("redis.auth.password", "redis-pw-2", "checksum/redis",
         {"api", "worker-critical", "recovery", "redis", "redis-sentinel"}),
        ("mongodb.auth.password", "mongo-pw-2", "checksum/mongodb",
         {"api", "worker-critical", "recovery", "mongodb"}),
        ("auth.apiKey", "api-key-2", "checksum/auth", {"api", "worker-critical", "recovery"}),
        ("relayer.keypair.json", "[2]", "checksum/relayer", {"api", "worker-critical"}),
    ],
)  # fmt: skip
def test_a_secret_change_rolls_the_pods_that_read_it(
    helm_home: Path,
    base: dict[str, dict[str, str]],
    key: str,
    value: str,
    annotation: str,
    rolled: set[str],
) -> None:
    diff = changed(helm_home, base, key, value)
    for name in rolled:
        assert annotation in diff[f"{RELEASE}-{name}"], name
    # The operator reads its Secret through the API (re-read every few seconds).
    assert diff[f"{RELEASE}-operator"] == set()


def _secrets_read(pod: dict[str, Any]) -> set[str]:
    spec = pod["spec"]
    names = {v["secret"]["secretName"] for v in spec.get("volumes") or [] if "secret" in v}
    for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for e in c.get("envFrom") or []:
            if "secretRef" in e:
                names.add(e["secretRef"]["name"])
    return names


def test_every_pod_reading_a_secret_carries_its_checksum(ci_render: Render) -> None:
    values = ci_render.values
    annotation = {
        values["auth"]["existingSecret"] or f"{RELEASE}-auth": "checksum/auth",
        values["redis"]["auth"]["existingSecret"] or f"{RELEASE}-redis": "checksum/redis",
        values["redis"]["external"]["existingSecret"] or f"{RELEASE}-redis-external": (
            "checksum/redis"
        ),
        values["mongodb"]["auth"]["existingSecret"] or f"{RELEASE}-mongodb": "checksum/mongodb",
        values["mongodb"]["external"]["existingSecret"] or f"{RELEASE}-mongodb-external": (
            "checksum/mongodb"
        ),
        values["relayer"]["keypair"]["existingSecret"] or f"{RELEASE}-relayer-keypair": (
            "checksum/relayer"
        ),
        values["relayer"]["signer"]["existingTokenSecret"] or f"{RELEASE}-signer-token": (
            "checksum/signer"
        ),
        values["redis"]["tls"]["existingSecret"] or f"{RELEASE}-redis-tls": "checksum/redis-tls",
        values["mongodb"]["tls"]["existingSecret"] or f"{RELEASE}-mongodb-tls": (
            "checksum/mongodb-tls"
        ),
    }
    for external in ("redis", "mongodb"):
        if values[external]["external"].get("tls", {}).get("caSecret"):
            annotation[values[external]["external"]["tls"]["caSecret"]] = f"checksum/{external}-tls"
    for obj, pod in ci_render.workloads():
        if obj["kind"] == "Job":
            continue  # the MongoDB init Job is named after a hash of its spec and runs once
        notes = pod["metadata"].get("annotations") or {}
        for secret in _secrets_read(pod):
            assert annotation[secret] in notes, (obj["metadata"]["name"], secret)


def test_mongodb_root_password_is_in_no_process_argument(helm_home: Path) -> None:
    render = template(helm_home, sets=FIXED)
    root = FIXED["mongodb.auth.rootPassword"]
    for obj, pod in render.workloads():
        spec = pod["spec"]
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            argv = [*c.get("command", []), *c.get("args", [])]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                argv += (c.get(probe) or {}).get("exec", {}).get("command", [])
            assert not any(root in a for a in argv), obj["metadata"]["name"]
            assert not any(re.search(r"\$\{?ROOT_PASSWORD", a) for a in argv)
    # The init Job's scripts read it from the environment inside mongosh, never
    # through the shell onto a command line.
    for config in render.of_kind("ConfigMap"):
        for text in (config.get("data") or {}).values():
            assert root not in text
            assert not re.search(r"\$\{?ROOT_PASSWORD", text), config["metadata"]["name"]


def test_a_generated_secret_has_one_value_per_render(helm_home: Path) -> None:
    # Nothing given: each generated value is drawn once, so every pod's checksum
    # of a Secret agrees (and matches the Secret after an install, when the next
    # upgrade reads the values back with lookup and renders them the same).
    found = checksums(template(helm_home))
    for annotation in ("checksum/auth", "checksum/redis", "checksum/mongodb"):
        values = {notes[annotation] for notes in found.values() if annotation in notes}
        assert len(values) == 1, annotation
