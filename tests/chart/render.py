"""Run the project's Helm on the chart: lint, template, install, in isolated homes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from relayq.dev.servers import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "relayq"
CI_VALUES = sorted((CHART / "ci").glob("[0-9][0-9]-*-values.yaml"))
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
# The Kubernetes version the control plane of tests/kube runs (tools/kubernetes/go.mod).
KUBE_VERSION = "1.37.2"
RELEASE = "relayq"
NAMESPACE = "relayq"
# image.registry has no default (the render fails without one); renders that
# name no ci/ file get this one, and a test's own `sets` may override it.
REGISTRY = "registry.example.com/acme"


class HelmError(RuntimeError):
    """helm exited non-zero; the message holds its stderr."""


def helm_env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """Helm's cache, config and data in `home`, so tests never touch the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run_helm(
    args: Sequence[str], home: Path, kubeconfig: Path | None = None, timeout: float = 300
) -> str:
    if not HELM.exists():
        raise HelmError(
            f"{HELM} is missing: run `make tools-test` (tools/install-k8s.sh builds it)"
        )
    done = subprocess.run(
        [str(HELM), *args],
        env=helm_env(home, kubeconfig),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def value_args(values: Iterable[Path] = (), sets: Mapping[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def parse_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@dataclass
class Render:
    """The objects one `helm template` produced, with lookups the tests use."""

    objects: list[dict[str, Any]]
    values: dict[str, Any]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}

    def workloads(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, pod template) of every Deployment, StatefulSet, Job and CronJob."""
        for o in self.objects:
            kind = o["kind"]
            if kind in {"Deployment", "StatefulSet", "Job"}:
                yield o, o["spec"]["template"]
            elif kind == "CronJob":
                yield o, o["spec"]["jobTemplate"]["spec"]["template"]


def template(
    home: Path,
    values: Sequence[Path] = (),
    sets: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> Render:
    out = run_helm(
        [
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSION, "--include-crds",
            "--set", f"image.registry={REGISTRY}", *value_args(values, sets), *extra,
        ],
        home,
    )  # fmt: skip
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in values:
        _merge(merged, yaml.safe_load(path.read_text()) or {})
    return Render(parse_documents(out), merged)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
