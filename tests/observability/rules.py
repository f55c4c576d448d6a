"""What the observability tests share: paths of the rule file and its promtool tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from relayq.dev.servers import REPO_ROOT

RULES = REPO_ROOT / "deploy/helm/relayq/files/alerts/relayq.rules.yaml"
RULE_TESTS = REPO_ROOT / "tests/observability/alerts_test.yaml"
RUNBOOKS = REPO_ROOT / "docs/runbooks.md"
RUNBOOK_BASE = "https://relayq.io/docs/runbooks.md#"


def binary(*names: str) -> str:
    """The first of `names` on PATH (Debian calls Alertmanager prometheus-alertmanager)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"none of {names} on PATH; run `make tools-test`")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule of the rule file."""
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]
