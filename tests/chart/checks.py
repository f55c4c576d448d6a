"""Checks on rendered objects, shared by the render and install tests."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate.utils
import referencing
import yaml
from referencing import Resource

from tests.chart.render import CHART, KUBE_VERSION, Render

# Kinds served by CustomResourceDefinitions: no built-in schema, checked by assertions.
CUSTOM_KINDS = {"WorkerAutoscaler", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
PRIORITIES = ("critical", "high", "medium", "low", "batch")


@functools.cache
def _core_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """The strict schema of one kind, as kubernetes_validate.validate builds it, kept."""
    version = kubernetes_validate.utils.major_minor(KUBE_VERSION)
    base = f"kubernetes-json-schema/v{version}.0-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kubernetes_validate.utils.schema_contents(
        f"{base}/{kind.lower()}-{group}.json", version
    )
    definitions = kubernetes_validate.utils.schema_contents(f"{base}/_definitions.json", version)
    registry: referencing.Registry[Any] = Resource.from_contents(schema) @ referencing.Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_core(obj: dict[str, Any]) -> None:
    """Validate against the Kubernetes OpenAPI schema (strict: unknown fields fail)."""
    _core_validator(obj["kind"], obj["apiVersion"]).validate(obj)


def workerautoscaler_schema() -> dict[str, Any]:
    crd = yaml.safe_load((CHART / "crds" / "workerautoscaler.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validate_workerautoscaler(obj: dict[str, Any]) -> None:
    # The CRD's structural schema is OpenAPI v3 (draft 4 style exclusiveMinimum).
    jsonschema.Draft4Validator(workerautoscaler_schema()).validate(obj)


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def secret_keys(render: Render, name: str) -> set[str] | None:
    """Keys of a rendered Secret, or None when the chart does not render it."""
    obj = render.get("Secret", name)
    if obj is None:
        return None
    return set(obj.get("data", {})) | set(obj.get("stringData", {}))


def configmap_keys(render: Render, name: str) -> set[str] | None:
    obj = render.get("ConfigMap", name)
    return None if obj is None else set(obj.get("data", {}))


def existing_secrets(values: dict[str, Any]) -> set[str]:
    """Secrets the values say exist before the install."""
    names = {
        values["auth"]["existingSecret"],
        values["redis"]["auth"]["existingSecret"],
        values["redis"]["external"]["existingSecret"],
        values["mongodb"]["auth"]["existingSecret"],
        values["mongodb"]["external"]["existingSecret"],
        values["relayer"]["keypair"]["existingSecret"],
        values["relayer"]["signer"]["existingTokenSecret"],
    }
    for tls in values["api"]["ingress"]["tls"]:
        names.add(tls["secretName"])
    return {n for n in names if n}


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        op = expr["operator"]
        if op == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
        if op == "NotIn" and labels.get(expr["key"]) in expr["values"]:
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def pods_selected(render: Render, selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        pod
        for _, pod in render.workloads()
        if selector_matches(selector, pod["metadata"].get("labels", {}))
    ]


def json_dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
