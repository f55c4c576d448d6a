"""Loading the dashboard generator and listing the queries of its panels."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from relayq.dev.servers import REPO_ROOT

GENERATOR = REPO_ROOT / "deploy/observability/dashboards.py"
DASHBOARD_DIR = REPO_ROOT / "deploy/helm/relayq/files/dashboards"


def generator() -> ModuleType:
    """deploy/observability/dashboards.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("relayq_dashboards", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict[str, Any]]:
    """The committed dashboards by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows are only headings)."""
    for panel in board.get("panels", []):
        if panel.get("type") != "row":
            yield panel
        yield from (p for p in panel.get("panels", []) if p.get("type") != "row")


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    for panel in panels(board):
        for target in panel.get("targets") or []:
            yield panel["title"], target["expr"]
